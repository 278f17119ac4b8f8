#!/usr/bin/env bash
# Runs the whole Java test suite (CUDA tests included) on the GPU machine, which has no Java/Maven.
#
#   scripts/gpu-test.sh pack   here: build, collect test classes + jars, and ../shared/tools/gpu-pack them
#   scripts/gpu-test.sh run    there (through the device tool, carry [".gpu"]):
#                              bash .gpu/run.sh scripts/gpu-test.sh run
# The run prints the self-check table (smelter doctor: every kernel against the CPU), JUnit's tree and summary, the analysis agreement again with the SIMT product kernel
# (SMELTER_CUDA_PRODUCT=simt), then runs scripts/test_transformers_roundtrip.py (save_pretrained ->
# smelter merge on CUDA -> from_pretrained) and scripts/test_dump_activations.py; record the outcome in
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
LIBS=java/target/gpu-libs
case "${1:-}" in
  pack)
    ./smelter-dev build -q
    ./smelter-dev mvn -q -pl java test-compile dependency:copy-dependencies -DincludeScope=test -DoutputDirectory="$LIBS"
    ./smelter-dev mvn -q dependency:copy -Dartifact=org.junit.platform:junit-platform-console-standalone:1.14.1 \
      -DoutputDirectory="$LIBS"
    rm -f "$LIBS"/smelter-native-*.jar  # native/target/classes is carried instead, fresh
    ../shared/tools/gpu-pack java/target/classes java/target/test-classes "$LIBS" native/target/classes
    ;;
  run)
    F=.gpu/files
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    cp="$F/java/target/classes:$F/java/target/test-classes:$F/native/target/classes"
    for j in "$F/$LIBS"/*.jar; do case "$j" in *console-standalone*) ;; *) cp="$cp:$j" ;; esac; done
    rc=0
    # First the self-check: every kernel on this GPU against the CPU, as a table for bench/RESULTS.md.
    java --enable-native-access=ALL-UNNAMED -cp "$cp" dev.smelter.cli.SmelterCli doctor || rc=1
    java --enable-native-access=ALL-UNNAMED -Xss4m -Dsmelter.header=native/include/smelter.h \
      -jar "$F/$LIBS"/junit-platform-console-standalone-*.jar execute --class-path "$cp" --scan-class-path \
      --details=tree --disable-banner || rc=1
    # The same analysis agreement with the SIMT product kernel, which the tensor-core one replaces on this GPU.
    SMELTER_CUDA_PRODUCT=simt java --enable-native-access=ALL-UNNAMED -Xss4m \
      -jar "$F/$LIBS"/junit-platform-console-standalone-*.jar execute --class-path "$cp" \
      --select-class dev.smelter.analysis.CudaAnalysisAgreementTest --details=tree --disable-banner || rc=1
    # The Python side, where torch and transformers are installed: a transformers round trip through
    # `smelter merge` on the GPU, and the activation dumper's self-test.
    python3 scripts/test_transformers_roundtrip.py --device cuda \
      --smelter "java --enable-native-access=ALL-UNNAMED -cp $cp dev.smelter.cli.SmelterCli" || rc=1
    python3 scripts/test_dump_activations.py || rc=1
    exit $rc
    ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
