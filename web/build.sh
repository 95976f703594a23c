#!/bin/sh
# Bundles the web client's modules into web/dist/app.js and collects the
# bundled libraries' licences into web/dist/LICENSES.txt (both committed and
# embedded by src/web.rs, with web/index.html, style.css and favicon.svg as
# they are, so `cargo build` needs no npm). Run after `npm ci` in web/.
set -eu
cd "$(dirname "$0")"
rm -rf dist
mkdir -p dist
npx --no-install esbuild src/app.js --bundle --format=esm --target=es2020 --minify \
  --legal-comments=none --outfile=dist/app.js
{
  echo "The web client bundles these libraries (MIT licence each):"
  for lib in curves hashes ciphers; do
    version=$(node -p "require('./node_modules/@noble/$lib/package.json').version")
    echo
    echo "=== @noble/$lib $version ==="
    cat "node_modules/@noble/$lib/LICENSE"
  done
} > dist/LICENSES.txt
echo "built web/dist:"; ls -l dist
