#!/usr/bin/env bash
# Builds the benchmarks jar here and packs it for the GPU machine (which has no Java or Maven)
# with ../shared/tools/gpu-pack: .gpu/ then holds a Java 25 runtime, run.sh and the jar.
#
#   bench/pack-gpu.sh            build (native with CUDA, java, bench) and pack
#   bench/pack-gpu.sh --no-build pack the jar already in bench/target
#
# Then, through the device tool, with carry [".gpu"]:
#   bash .gpu/run.sh bench/run-gpu.sh
# The jar carries libsmelter.so (CPU and CUDA backends, sm_90) from this build.
set -euo pipefail
cd "$(dirname "$0")/.."
JAR=bench/target/benchmarks.jar
PACK=$(cd ../shared/tools 2>/dev/null && pwd)/gpu-pack
[ -x "$PACK" ] || { echo "pack-gpu.sh: ../shared/tools/gpu-pack not found beside the project root" >&2; exit 2; }

if [ "${1:-}" != "--no-build" ]; then
  ./smelter-dev mvn -o -q -DskipTests package -pl native,java,bench ||
    ./smelter-dev mvn -q -DskipTests package -pl native,java,bench
fi
[ -f "$JAR" ] || { echo "pack-gpu.sh: $JAR is missing (build first)" >&2; exit 2; }
if ! unzip -l "$JAR" | grep 'dev/smelter/native/linux-x86_64/libsmelter.so' >/dev/null; then
  echo "pack-gpu.sh: $JAR has no libsmelter.so" >&2
  exit 2
fi

rm -rf .gpu/files  # only what this suite needs; the runtime (.gpu/jre.tgz) is kept as a cache
CLI=java/target/smelter-cli.jar  # for `run-gpu.sh e2e`
if [ -d .git ]; then
  "$PACK" "$JAR" "$CLI"
else
  # A git worktree (.git is a file): gpu-pack wants a .git directory, so pack in a scratch root
  # and move the result here.
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/.git" "$stage/bench/target" "$stage/java/target" "$stage/.gpu"
  cp "$JAR" "$stage/$JAR"
  cp "$CLI" "$stage/$CLI"
  if [ -f .gpu/jre.tgz ]; then cp .gpu/jre.tgz "$stage/.gpu/"; fi
  (cd "$stage" && "$PACK" "$JAR" "$CLI")
  rm -rf .gpu
  mv "$stage/.gpu" .gpu
fi
echo "packed: .gpu/ ($(du -sh .gpu | cut -f1)). On the GPU machine (device tool, carry [\".gpu\"]):"
echo "  bash .gpu/run.sh bench/run-gpu.sh"
