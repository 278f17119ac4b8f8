package dev.smelter.cli;

import dev.smelter.methods.MergeMethods;
import java.io.PrintStream;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;

/** {@code smelter methods}: every supported merge method with its parameters and defaults (from {@link MergeMethods}). */
@Command(name = "methods", mixinStandardHelpOptions = true,
        description = "List the supported merge methods (mergekit names), their parameters and defaults.")
final class MethodsCommand implements Callable<Integer> {
    @Override
    public Integer call() {
        print(System.out);
        return 0;
    }

    static void print(PrintStream out) {
        for (MergeMethods.Method m : MergeMethods.Method.values()) {
            out.printf(Locale.ROOT, "%s%s%n", m.mergekitName(), m.needsBase() ? "  (needs base_model)" : "");
            out.printf(Locale.ROOT, "    %s%n", m.description());
            for (MergeMethods.Parameter p : m.parameters())
                out.printf(Locale.ROOT, "    %-18s %-9s %s%n", p.name(), p.perModel() ? "per model" : "global",
                        p.required() ? "required" : "default " + p.defaultValue());
        }
        out.println();
        out.println("Rules every method follows (mergekit's, except where marked; all differences: docs/MERGEKIT.md):");
        out.println("  - keep counts are int(density * n) and int(gamma * n), from the config's value in double");
        out.println("  - elements tied with the k-th largest magnitude (or SCE variance) are all kept (Smelter: mergekit");
        out.println("    keeps an arbitrary subset of such ties)");
        out.println("  - TIES sign vote: a weighted sum >= 0 elects +; Smelter sums in f32, so whether a sum is exactly 0");
        out.println("    can differ from mergekit's sum in the tensor dtype");
        out.println("  - dtype casts the inputs first (the compute dtype); arithmetic is f32 (Smelter), out_dtype is the");
        out.println("    output's (default dtype, else the inputs')");
        out.println("  - gradients: layer i of n at t = i/(n-1), t = 1 for one layer, t = 0 outside the layers");
        out.println("  - linear weighs a base_model listed among the models; the other methods take it once, as the base");
        out.println("  - a {filter, value} list with no value for a tensor falls back to the top-level parameters, then to");
        out.println("    the default (a required parameter left without one is an error before anything is read)");
        out.println("  - nearswap, arcee_fusion, ram, ramplus_tl, nuslerp per row or column and model_stock with filter_wise");
        out.println("    run in Java over the host inputs, in f64 with one rounding (on the CPU cores, whatever the device)");
        out.println();
        out.println("Every parameter above can be an axis of smelter sweep (--grid NAME=START:STOP:STEP or NAME=V1,V2,...):");
        out.println("a per-model one is set for every model, or for models[I] alone as NAME@I; seed is an axis too for");
        out.println("dare_linear and dare_ties.");
    }
}
