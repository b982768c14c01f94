// Adds jobs with BullMQ's own client: node produce.js QUEUE RECORD FIRST COUNT SECONDS [DELAYED]
// (ids FIRST..FIRST+COUNT; DELAYED more jobs delayed by an hour, which are not backlog; Redis from
// REDIS_URL; bullmq from NODE_PATH).
const { Queue } = require('bullmq');
const IORedis = require('ioredis');

async function main() {
  const [name, record, first, count, seconds, delayed] = process.argv.slice(2);
  if (seconds === undefined) throw new Error('usage: produce.js QUEUE RECORD FIRST COUNT SECONDS [DELAYED]');
  const connection = new IORedis(process.env.REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue(name, { connection });
  const jobs = [];
  for (let i = Number(first); i < Number(first) + Number(count); i++) {
    jobs.push({ name: 'record', data: { id: String(i), seconds: Number(seconds), record } });
  }
  for (let i = 0; i < Number(delayed || 0); i++) {
    jobs.push({ name: 'later', data: { id: `delayed-${i}`, seconds: 0, record }, opts: { delay: 3600 * 1000 } });
  }
  await queue.addBulk(jobs);
  await queue.close();
  await connection.quit();
}
main().catch((e) => {
  console.error(e);
  process.exit(1);
});
