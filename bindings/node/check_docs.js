'use strict';
// The docs show examples/*.js verbatim: fail when a shown copy drifts.
// node check_docs.js FILE... (each FILE must contain every example it names)
const fs = require('node:fs');
const path = require('node:path');

let failed = false;
for (const doc of process.argv.slice(2)) {
  const text = fs.readFileSync(doc, 'utf8');
  const names = [...text.matchAll(/bindings\/node\/(examples\/[\w.-]+\.js)|\]\((examples\/[\w.-]+\.js)\)/g)]
    .map((m) => m[1] || m[2]);
  if (names.length === 0) {
    console.error(`${doc}: names no example`);
    failed = true;
  }
  for (const name of new Set(names)) {
    const code = fs.readFileSync(path.join(__dirname, name), 'utf8');
    if (!text.includes('```js\n' + code + '```')) {
      console.error(`${doc}: its copy of ${name} differs from the file`);
      failed = true;
    }
  }
}
process.exit(failed ? 1 : 0);
