// A BullMQ worker whose jobs record their start and end, so a test can prove every job ran once and
// none was cut: HINCRBY <record>:started <id>, sleep, HINCRBY <record>:ended <id>.
// node worker.js QUEUE CONCURRENCY (Redis from REDIS_URL; bullmq from NODE_PATH).
// BullMQ's graceful shutdown is the application's: on SIGTERM (qsupervisor's drain signal) the worker
// takes no new job, waits for its active ones (worker.close()), then exits 0.

// First thing, so a drain that comes while the worker starts (before it took a job) ends it with 0
// instead of Node's default death by SIGTERM (143).
let worker = null;
let closing = false;
process.on('SIGTERM', async () => {
  if (closing) return;
  closing = true;
  console.log('SIGTERM: finishing active jobs');
  if (worker) await worker.close();
  console.log('closed');
  process.exit(0);
});

const { Worker } = require('bullmq');
const IORedis = require('ioredis');

const [queue, concurrency] = process.argv.slice(2);
const url = process.env.REDIS_URL;
if (!queue || !url) {
  console.error('usage: REDIS_URL=... node worker.js QUEUE [CONCURRENCY]');
  process.exit(2);
}
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const recorder = new IORedis(url);

worker = new Worker(
  queue,
  async (job) => {
    const { id, seconds, record } = job.data;
    await recorder.hincrby(`${record}:started`, id, 1);
    await new Promise((r) => setTimeout(r, seconds * 1000));
    await recorder.hincrby(`${record}:ended`, id, 1);
  },
  { connection, concurrency: Number(concurrency || 1) },
);
worker.on('ready', () => console.log(`bullmq worker ready on ${queue}`));

