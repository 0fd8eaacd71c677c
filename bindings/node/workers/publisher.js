'use strict';
// A worker thread publishing half of the events through the shared broker.
const { workerData, parentPort } = require('node:worker_threads');
const { Broker } = require('..');

const broker = Broker.fromAddress(workerData.broker);
const p = broker.publisher(workerData.topic);
const payload = Buffer.alloc(64);
for (let i = 0; i < workerData.count; i++) {
  payload.writeUInt32LE(workerData.worker, 0);
  payload.writeUInt32LE(i, 4);
  if (workerData.worker === 0) {
    p.publish('order.created', payload, { origin: workerData.worker + 1 });
  } else {
    p.publishWith('order.created', 64, (view) => view.set(payload), { origin: workerData.worker + 1 });
  }
}
p.close();
parentPort.postMessage('done');
