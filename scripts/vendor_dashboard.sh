#!/bin/sh
# Refresh the dashboard's vendored browser libraries from the npm registry.
#
# Versions are pinned in central/dashboard/vendor/package.json and locked (with integrity hashes)
# in package-lock.json beside it; `npm ci` installs exactly those into a temporary folder, and the
# files the dashboard serves are copied into central/dashboard/static/vendor/ with their licences
# and a MANIFEST.json (package, version, licence file and SHA-256 of each file) that the tests check.
#
#   scripts/vendor_dashboard.sh            # reinstall the locked versions
#   scripts/vendor_dashboard.sh --update   # after editing package.json: re-resolve and rewrite the lock
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
spec="$root/central/dashboard/vendor"
out="$root/central/dashboard/static/vendor"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cp "$spec/package.json" "$work/"
if [ "${1:-}" = "--update" ]; then
    (cd "$work" && npm install --ignore-scripts --no-audit --no-fund)
    cp "$work/package-lock.json" "$spec/package-lock.json"
else
    cp "$spec/package-lock.json" "$work/"
    (cd "$work" && npm ci --ignore-scripts --no-audit --no-fund)
fi
mods="$work/node_modules"

rm -rf "$out"
mkdir -p "$out"
# A source map comment would make the browser's tools ask for a .map file that is not shipped.
strip_map() { sed '/^\/\/# sourceMappingURL=/d' "$1" >"$2"; }

strip_map "$mods/uplot/dist/uPlot.iife.min.js" "$out/uplot.min.js"
cp "$mods/uplot/dist/uPlot.min.css" "$out/uplot.min.css"
cp "$mods/uplot/LICENSE" "$out/uplot.LICENSE"

strip_map "$mods/socket.io-client/dist/socket.io.esm.min.js" "$out/socket.io.esm.min.js"
# The bundle contains socket.io-client and the packages it was built from.
for pkg in socket.io-client engine.io-client engine.io-parser socket.io-parser @socket.io/component-emitter; do
    version=$(node -p "require('$mods/$pkg/package.json').version")
    printf '%s %s\n\n' "$pkg" "$version"
    cat "$mods/$pkg/LICENSE"
    printf '\n\n'
done >"$out/socket.io.LICENSE"

node - "$mods" "$out" <<'JS'
const fs = require("fs");
const crypto = require("crypto");
const [mods, out] = process.argv.slice(2);
const files = {
  "uplot.min.js": ["uplot", "uplot.LICENSE"],
  "uplot.min.css": ["uplot", "uplot.LICENSE"],
  "socket.io.esm.min.js": ["socket.io-client", "socket.io.LICENSE"],
};
const manifest = {};
for (const [name, [pkg, licence]] of Object.entries(files)) {
  const body = fs.readFileSync(`${out}/${name}`);
  manifest[name] = {
    package: pkg,
    version: require(`${mods}/${pkg}/package.json`).version,
    license: require(`${mods}/${pkg}/package.json`).license,
    license_file: licence,
    sha256: crypto.createHash("sha256").update(body).digest("hex"),
  };
}
fs.writeFileSync(`${out}/MANIFEST.json`, JSON.stringify(manifest, null, 2) + "\n");
JS
echo "vendored into $out:"
ls -l "$out"
