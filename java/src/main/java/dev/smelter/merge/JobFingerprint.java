package dev.smelter.merge;

import java.lang.reflect.Array;
import java.lang.reflect.RecordComponent;
import java.util.Collection;
import java.util.Map;

/**
 * The text a partitioned job's fingerprint is the hash of: values written out the same way in every process, records
 * component by component and arrays element by element (never an identity hash), so that the partitions and the
 * finalize step of one job, in different processes on different nodes, agree.
 */
final class JobFingerprint {
    private JobFingerprint() {}

    /** {@code value} written out canonically. */
    static String canonical(Object value) {
        StringBuilder s = new StringBuilder();
        append(s, value, 0);
        return s.toString();
    }

    private static void append(StringBuilder s, Object v, int depth) {
        if (depth > 32) throw new IllegalStateException("a config nested more than 32 levels");
        if (v == null) {
            s.append("null");
        } else if (v.getClass().isArray()) {
            s.append('[');
            for (int i = 0; i < Array.getLength(v); i++) {
                if (i > 0) s.append(',');
                append(s, Array.get(v, i), depth + 1);
            }
            s.append(']');
        } else if (v instanceof Record r) {
            s.append(r.getClass().getSimpleName()).append('(');
            RecordComponent[] parts = r.getClass().getRecordComponents();
            for (int i = 0; i < parts.length; i++) {
                if (i > 0) s.append(',');
                s.append(parts[i].getName()).append('=');
                try {
                    var accessor = parts[i].getAccessor();
                    accessor.setAccessible(true);
                    append(s, accessor.invoke(r), depth + 1);
                } catch (ReflectiveOperationException | RuntimeException e) {
                    throw new IllegalStateException("cannot describe " + r.getClass().getName() + "." + parts[i].getName(), e);
                }
            }
            s.append(')');
        } else if (v instanceof Map<?, ?> m) {
            s.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : m.entrySet()) {
                if (!first) s.append(',');
                first = false;
                append(s, e.getKey(), depth + 1);
                s.append(':');
                append(s, e.getValue(), depth + 1);
            }
            s.append('}');
        } else if (v instanceof Collection<?> c) {
            s.append('[');
            boolean first = true;
            for (Object o : c) {
                if (!first) s.append(',');
                first = false;
                append(s, o, depth + 1);
            }
            s.append(']');
        } else if (v instanceof java.nio.file.Path p) {
            s.append(p.toAbsolutePath().normalize());
        } else {
            try {
                if (v.getClass().getMethod("toString").getDeclaringClass() == Object.class)
                    throw new IllegalStateException(v.getClass().getName() + " in a config has no canonical form (make it a "
                            + "record or give it a toString)");
            } catch (NoSuchMethodException e) {
                throw new IllegalStateException(e);
            }
            s.append(v);
        }
    }
}
