// Builds dist/: ESM and CommonJS bundles (index, node), a browser script
// (global `Herald`), declarations; type-checks strictly (the source, and
// test/typecheck.ts for the typed event map); fails if the
// minified, gzipped browser bundle is over the size budget.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const BUDGET = 10 * 1024; // bytes, min+gzip
process.chdir(new URL('..', import.meta.url).pathname);
rmSync('dist', { recursive: true, force: true });

const common = { bundle: true, target: 'es2020', sourcemap: true, logLevel: 'warning' };
for (const entry of ['index', 'node']) {
  await build({ ...common, entryPoints: [`src/${entry}.ts`], format: 'esm', outfile: `dist/${entry}.js`, platform: entry === 'node' ? 'node' : 'neutral' });
  await build({ ...common, entryPoints: [`src/${entry}.ts`], format: 'cjs', outfile: `dist/${entry}.cjs`, platform: entry === 'node' ? 'node' : 'neutral' });
}
await build({ ...common, entryPoints: ['src/index.ts'], format: 'iife', globalName: 'Herald', minify: true, outfile: 'dist/herald-client.min.js' });
// The budget is measured on the minified ESM bundle, what a page's bundler would ship.
const min = await build({ ...common, sourcemap: false, entryPoints: ['src/index.ts'], format: 'esm', minify: true, write: false });
const bytes = min.outputFiles[0].contents;
writeFileSync('dist/index.min.js', bytes);

const tsc = new URL('../node_modules/typescript/bin/tsc', import.meta.url).pathname;
execFileSync(process.execPath, [tsc, '-p', '.', '--emitDeclarationOnly'], { stdio: 'inherit' });
execFileSync(process.execPath, [tsc, '-p', '.', '--noEmit'], { stdio: 'inherit' });
// The typed event map, checked from the outside (test/typecheck.ts).
execFileSync(process.execPath, [tsc, '-p', 'tsconfig.typetest.json'], { stdio: 'inherit' });

const gz = gzipSync(bytes, { level: 9 }).length;
console.log(`size: ${bytes.length} B minified, ${gz} B min+gzip (budget ${BUDGET} B)`);
if (gz > BUDGET) {
  console.error(`over the size budget by ${gz - BUDGET} B`);
  process.exit(1);
}
writeFileSync('dist/size.json', JSON.stringify({ minified: bytes.length, gzip: gz, budget: BUDGET }) + '\n');
readFileSync('dist/index.cjs'); // present: the CommonJS build is what the tests load
