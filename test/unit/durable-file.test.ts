import test from 'ava';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileErrorText, isTemporaryOf, writeFileDurably } from '../../proxy/runtime/durable-file.js';
import { smallFilesystem } from '../helpers/small-fs.js';

test('a durable write replaces the file and leaves no temporary file; a new file is mode 0600', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-durable-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'state.json');
  await writeFileDurably(path, 'one\n');
  await writeFileDurably(path, 'two\n');
  t.is(await readFile(path, 'utf8'), 'two\n');
  t.deepEqual(await readdir(dir), ['state.json']);
  t.is((await stat(path)).mode & 0o777, 0o600);
});

test('concurrent durable writes each use their own temporary file: every one succeeds and the file holds one of them whole', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-durable-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'state.json');
  const bodies = Array.from({ length: 50 }, (_, i) => `${String(i).repeat(1000)}\n`);
  const results = await Promise.allSettled(bodies.map((b) => writeFileDurably(path, b)));
  t.deepEqual(
    results.filter((r) => r.status === 'rejected'),
    [],
  );
  t.true(bodies.includes(await readFile(path, 'utf8')));
  t.deepEqual(await readdir(dir), ['state.json']);
});

test('on a full disk the write fails with ENOSPC, the previous file is unchanged and no temporary file is left', async (t) => {
  const fs = await smallFilesystem(t);
  const path = join(fs.dir, 'state.json');
  await writeFile(path, 'before\n');
  await fs.fill();
  const err = await t.throwsAsync(writeFileDurably(path, 'x'.repeat(64 * 1024)));
  t.is((err as NodeJS.ErrnoException).code, 'ENOSPC');
  t.regex(fileErrorText(err), /^ENOSPC/);
  t.is(await readFile(path, 'utf8'), 'before\n');
  t.deepEqual((await readdir(fs.dir)).sort(), ['.filler', 'state.json']);
  await fs.free();
  await writeFileDurably(path, 'after\n');
  t.is(await readFile(path, 'utf8'), 'after\n');
});

test('a durable write can come piece by piece: the pieces follow each other, and a failing source leaves the previous file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-durable-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'state.json');
  await writeFileDurably(path, (function* () {
    for (let i = 0; i < 100; i++) yield `${i}:${'x'.repeat(1000)}\n`;
  })());
  const lines = (await readFile(path, 'utf8')).trimEnd().split('\n');
  t.deepEqual(
    lines.map((l) => Number(l.split(':')[0])),
    Array.from({ length: 100 }, (_, i) => i),
  );
  const failing = async function* () {
    yield 'half\n';
    throw new Error('the source broke');
  };
  await t.throwsAsync(writeFileDurably(path, failing()), { message: 'the source broke' });
  t.is((await readFile(path, 'utf8')).split('\n').length, 101, 'the previous file stays');
  t.deepEqual(await readdir(dir), ['state.json']);
});

test('isTemporaryOf: the temporary files a durable write of a path makes, and nothing else', (t) => {
  t.true(isTemporaryOf('/var/lib/x/vms.json', '.vms.json.123.4.tmp'));
  for (const name of ['vms.json', '.vms.json.tmp', '.vms.json.123.tmp', '.vms.json.1.2.tmp.bak', '.other.json.1.2.tmp', 'vms.json.log.1']) t.false(isTemporaryOf('/var/lib/x/vms.json', name), name);
});
