#!/usr/bin/env bash
# The npm package as a user gets it: npm pack (prebuild.sh bundles the
# release libherald), install the tarball into a fresh project in a temp
# directory outside the repository, then with no HERALD_LIB:
#   1. a program publishes and receives an event through the bundled library;
#   2. tsc checks a TypeScript program against the installed declarations;
#   3. without the bundled library, the load error names every path tried;
#   4. load({path}) picks an explicit library.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
lib="${HERALD_LIB:-$here/../../target/release/libherald.so}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$here" && HERALD_LIB="$lib" npm pack --pack-destination "$work" >/dev/null)
tarball="$(ls "$work"/herald-embedded-*.tgz)"
platform="$(node -p 'process.platform + "-" + process.arch')"
tar -tzf "$tarball" | sort > "$work/contents"
printf '%s\n' package/LICENSE package/README.md package/index.d.ts package/index.js package/package.json \
    "package/prebuilds/$platform/libherald.so" | sort > "$work/expected"
diff -u "$work/expected" "$work/contents"

mkdir "$work/app"
cd "$work/app"
npm init -y >/dev/null
ts_version="$(node -p "require('$here/package.json').devDependencies.typescript")"
types_version="$(node -p "require('$here/package.json').devDependencies['@types/node']")"
unset HERALD_LIB
npm install --no-audit --no-fund --prefer-offline "$tarball" "typescript@$ts_version" "@types/node@$types_version" >/dev/null

# 1. Publish and receive through the installed package.
cat > main.js <<'JS'
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const herald = require('herald-embedded');

(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'herald-pkg-'));
  const broker = herald.Broker.open({ dataDir: dir });
  const sub = broker.subscribe({ topics: ['pkg.test'] });
  const got = sub.next(10000);
  const pub = broker.publisher('pkg.test');
  pub.publish('hello', 'from the tarball');
  const e = await got;
  assert.equal(e.type, 'hello');
  assert.equal(e.payload.toString(), 'from the tarball');
  const loaded = herald.libraryPath();
  assert.equal(loaded, path.join(path.dirname(require.resolve('herald-embedded')), 'prebuilds',
    `${process.platform}-${process.arch}`, 'libherald.so'));
  console.log(`package test: received "${e.payload}" (seq ${e.seq}) through ${loaded}, herald ${herald.version()}`);
  await sub.close();
  pub.close();
  broker.close();
  fs.rmSync(dir, { recursive: true, force: true });
})().catch((err) => { console.error(err); process.exit(1); });
JS
node main.js

# 2. The declarations, as installed.
cp "$here/test/types/usage.ts" "$here/test/types/tsconfig.json" .
npx --no-install tsc -p tsconfig.json
echo "package test: tsc $(npx --no-install tsc --version) accepts the declarations"

# 3. Nothing to load: the error lists every attempt (unless a system-wide
#    libherald.so.0 exists, which is then what loads).
mkdir "$work/lib"
cp "$lib" "$work/lib/libherald.so"
rm -rf node_modules/herald-embedded/prebuilds
cat > missing.js <<'JS'
const assert = require('node:assert/strict');
const herald = require('herald-embedded');
try {
  const p = herald.load({ path: '/nonexistent/explicit/libherald.so' });
  assert.equal(p, 'libherald.so.0', `loaded ${p}`);
  console.log('package test: a system-wide libherald.so.0 was found; the all-fail message is not checked');
} catch (e) {
  for (const want of ['/nonexistent/explicit/libherald.so', '/nonexistent/env/libherald.so',
    `prebuilds/${process.platform}-${process.arch}/libherald.so`, 'libherald.so.0']) {
    assert.ok(e.message.includes(want), `the error names ${want}:\n${e.message}`);
  }
  console.log(`package test: ${e.message.split('\n')[0]} (${e.message.split('\n').length - 1} paths listed)`);
}
JS
HERALD_LIB=/nonexistent/env/libherald.so node missing.js

# 4. An explicit path.
node -e "
const herald = require('herald-embedded');
const want = process.argv[1];
if (herald.load({ path: want }) !== want || herald.libraryPath() !== want) throw new Error('not loaded from ' + want);
console.log('package test: load({path}) loaded', want, 'herald', herald.version());
" "$work/lib/libherald.so"
