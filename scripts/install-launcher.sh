#!/usr/bin/env bash
# Installs the `smelter` command: copies the CLI jar to PREFIX/share/smelter/smelter-cli.jar and writes the launcher
# PREFIX/bin/smelter, a bash script that runs it with a JDK 23 or newer. `./smelter-dev install [PREFIX]` builds the
# jar if needed and calls this.
#
#   scripts/install-launcher.sh JAR PREFIX [JDK]
#
# The launcher takes $SMELTER_JAVA_HOME if set, else JDK (the one found at install time) while it is there, else the
# first JDK 23+ among $JAVA_HOME, `java` on PATH, /usr/lib/jvm/* and ~/.sdkman/candidates/java/*. Extra JVM options
# can be given in $SMELTER_JAVA_OPTS (e.g. -Xmx8g).
set -euo pipefail

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: scripts/install-launcher.sh JAR PREFIX [JDK]" >&2
  exit 2
fi
jar=$1 prefix=$2 jdk=${3:-}
[ -f "$jar" ] || { echo "install-launcher.sh: $jar not found (build it first: ./smelter-dev build)" >&2; exit 2; }
if [ -n "$jdk" ] && [ ! -x "$jdk/bin/java" ]; then
  echo "install-launcher.sh: $jdk/bin/java not found" >&2
  exit 2
fi

mkdir -p "$prefix/share/smelter" "$prefix/bin"
prefix=$(cd "$prefix" && pwd)
target="$prefix/share/smelter/smelter-cli.jar"
cp "$jar" "$target.tmp" && chmod 644 "$target.tmp" && mv -f "$target.tmp" "$target"

launcher="$prefix/bin/smelter"
{
  echo '#!/usr/bin/env bash'
  echo '# The smelter command, written by `smelter-dev install`: runs the Smelter CLI with a JDK 23 or newer.'
  echo 'set -euo pipefail'
  printf 'JAR=%q\n' "$target"
  printf 'INSTALL_JDK=%q\n' "$jdk"
  cat <<'EOF'
java_major() {  # the major version of the java binary $1, or 0
  "$1" -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2; exit}' |
    awk -F. '{print ($1 == "1") ? $2 : $1}' || echo 0
}
find_java() {
  if [ -n "${SMELTER_JAVA_HOME:-}" ]; then echo "$SMELTER_JAVA_HOME/bin/java"; return 0; fi
  if [ -n "$INSTALL_JDK" ] && [ -x "$INSTALL_JDK/bin/java" ]; then echo "$INSTALL_JDK/bin/java"; return 0; fi
  local candidates=() c v
  [ -n "${JAVA_HOME:-}" ] && candidates+=("$JAVA_HOME")
  if command -v java >/dev/null 2>&1; then
    candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  fi
  for c in $(ls -d /usr/lib/jvm/* "$HOME"/.sdkman/candidates/java/* 2>/dev/null | sort -rV); do candidates+=("$c"); done
  for c in "${candidates[@]}"; do
    if [ -x "$c/bin/java" ]; then
      v=$(java_major "$c/bin/java")
      if [ "${v:-0}" -ge 23 ] 2>/dev/null; then echo "$c/bin/java"; return 0; fi
    fi
  done
  return 1
}
java=$(find_java) || {
  echo "smelter: no JDK 23 or newer found (searched SMELTER_JAVA_HOME, JAVA_HOME, PATH, /usr/lib/jvm);" \
    "install one (e.g. Temurin 25) or set SMELTER_JAVA_HOME to it" >&2
  exit 2
}
# shellcheck disable=SC2086  # SMELTER_JAVA_OPTS holds several options
exec "$java" --enable-native-access=ALL-UNNAMED ${SMELTER_JAVA_OPTS:-} -jar "$JAR" "$@"
EOF
} > "$launcher.tmp"
chmod 755 "$launcher.tmp"
mv -f "$launcher.tmp" "$launcher"

echo "installed $launcher (runs $target)"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH; add it, e.g. export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
