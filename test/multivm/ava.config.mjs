// ava config for the multi-VM suite, which runs INSIDE the outer QEMU guest
// (test/multivm/outer.mjs boots it): compiled JavaScript only, one process, and
// a timeout for a hook that boots inner guests under TCG inside TCG (minutes).
export default {
  files: ['dist/test/multivm/**/*.test.js'],
  workerThreads: false,
  concurrency: 1,
  timeout: '20m',
};
