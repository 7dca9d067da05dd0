// ava config for the vsock suite, which runs INSIDE the QEMU guest (test/vm/guest.mjs):
//   node test/vm/guest.mjs -- node node_modules/ava/entrypoints/cli.mjs --config test/vm/ava.config.mjs
// Compiled JavaScript only (npm run build puts test/vm/*.ts into dist/test/vm/): under TCG
// a tsx worker takes longer to start than ava's default timeout. One process per file, no
// worker threads (the native core refuses them), and a long timeout for emulated CPUs.
export default {
  files: ['dist/test/vm/**/*.test.js'],
  workerThreads: false,
  concurrency: 1,
  timeout: '10m',
};
