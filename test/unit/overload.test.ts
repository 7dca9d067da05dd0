import test from 'ava';
import { ADMISSION_CORE_OPEN, ADMISSION_JS_OPEN, Admission } from '../../proxy/overload/admission.js';
import { describeOverload, overloadState, parseFdLimit, type OverloadReadings } from '../../proxy/overload/overload.js';

const MIB = 1024 * 1024;
const calm: OverloadReadings = { fdLimit: 1024, fdsOpen: 100, rssBytes: 100 * MIB, acceptFailures: { EMFILE: 0, ENFILE: 0, ENOBUFS: 0, ENOMEM: 0 } };
const thresholds = { minFreeFds: 64, maxMemoryBytes: 512 * MIB };

test('plenty of descriptors and memory, no failed accepts: not overloaded', (t) => {
  t.deepEqual(overloadState(calm, thresholds), []);
});

test('fds: overloaded exactly when fewer than min_free_fds are free', (t) => {
  t.deepEqual(overloadState({ ...calm, fdsOpen: 1024 - 64 }, thresholds), [], '64 free is enough');
  t.deepEqual(overloadState({ ...calm, fdsOpen: 1024 - 63 }, thresholds), [{ resource: 'fds', detail: '63 free of 1024 descriptors (min_free_fds 64)' }]);
  t.deepEqual(overloadState({ ...calm, fdsOpen: 1030 }, thresholds), [{ resource: 'fds', detail: '0 free of 1024 descriptors (min_free_fds 64)' }], 'never a negative count');
});

test('fds: min_free_fds 0 leaves only failed accepts', (t) => {
  t.deepEqual(overloadState({ ...calm, fdsOpen: 1024 }, { ...thresholds, minFreeFds: 0 }), []);
  t.deepEqual(overloadState({ ...calm, fdsOpen: 1024, acceptFailures: { EMFILE: 2 } }, { ...thresholds, minFreeFds: 0 }), [{ resource: 'fds', detail: '2 accepts failed with EMFILE' }]);
});

test('an unlimited descriptor limit is never short', (t) => {
  t.deepEqual(overloadState({ ...calm, fdLimit: Number.POSITIVE_INFINITY, fdsOpen: 1e9 }, thresholds), []);
});

test('memory: overloaded from max_memory on; no limit means never', (t) => {
  t.deepEqual(overloadState({ ...calm, rssBytes: 512 * MIB - 1 }, thresholds), []);
  t.deepEqual(overloadState({ ...calm, rssBytes: 512 * MIB }, thresholds), [{ resource: 'memory', detail: 'resident set 512 MiB (max_memory 512 MiB)' }]);
  t.deepEqual(overloadState({ ...calm, rssBytes: 600.5 * MIB }, thresholds), [{ resource: 'memory', detail: 'resident set 600.5 MiB (max_memory 512 MiB)' }]);
  t.deepEqual(overloadState({ ...calm, rssBytes: 64 * 1024 * MIB }, { ...thresholds, maxMemoryBytes: null }), []);
});

test('failed accepts name their resource: EMFILE and ENFILE are fds, ENOBUFS and ENOMEM memory', (t) => {
  t.deepEqual(overloadState({ ...calm, acceptFailures: { EMFILE: 1, ENFILE: 3 } }, thresholds), [{ resource: 'fds', detail: '1 accepts failed with EMFILE, 3 accepts failed with ENFILE' }]);
  t.deepEqual(overloadState({ ...calm, acceptFailures: { ENOBUFS: 1, ENOMEM: 2 } }, thresholds), [{ resource: 'memory', detail: '1 accepts failed with ENOBUFS, 2 accepts failed with ENOMEM' }]);
  t.deepEqual(overloadState({ ...calm, acceptFailures: { EPERM: 5 } }, thresholds), [], 'other errors say nothing about resources');
});

test('every cause is reported, fds first, with both readings and failures', (t) => {
  const state = overloadState({ ...calm, fdsOpen: 1000, rssBytes: 1024 * MIB, acceptFailures: { EMFILE: 1, ENOMEM: 1 } }, thresholds);
  t.deepEqual(state, [
    { resource: 'fds', detail: '24 free of 1024 descriptors (min_free_fds 64), 1 accepts failed with EMFILE' },
    { resource: 'memory', detail: 'resident set 1024 MiB (max_memory 512 MiB), 1 accepts failed with ENOMEM' },
  ]);
  t.is(describeOverload(state), 'fds: 24 free of 1024 descriptors (min_free_fds 64), 1 accepts failed with EMFILE; memory: resident set 1024 MiB (max_memory 512 MiB), 1 accepts failed with ENOMEM');
  t.is(describeOverload([]), '');
});

test('parseFdLimit reads the soft "Max open files" of /proc/self/limits', (t) => {
  const limits = [
    'Limit                     Soft Limit           Hard Limit           Units     ',
    'Max processes             63457                63457                processes ',
    'Max open files            256                  4096                 files     ',
    'Max locked memory         8388608              8388608              bytes     ',
  ].join('\n');
  t.is(parseFdLimit(limits), 256);
  t.is(parseFdLimit(limits.replace('256                  4096', 'unlimited            unlimited')), Number.POSITIVE_INFINITY);
  t.is(parseFdLimit('Max processes 1 1 processes\n'), undefined);
});

function gate(shedding: boolean): { shedding(): boolean; describe(): string; follow(counters: Int32Array, index: number): void; asked: number } {
  const g = {
    asked: 0,
    follow: (counters: Int32Array, index: number) => {
      counters[index] = shedding ? 0 : 0x7fffffff;
    },
    shedding() {
      g.asked++;
      return shedding;
    },
    describe: () => 'fds: 3 free of 256 descriptors (min_free_fds 64)',
  };
  return g;
}

test('admission: a listener at its max_connections refuses, one below takes the connection', (t) => {
  const admission = new Admission(null, gate(false));
  t.is(admission.refusal('out', 2, 3), undefined);
  t.deepEqual(admission.refusal('out', 3, 3), { reason: 'listener_max_connections', message: 'refused: listener "out" has 3 connections open (max_connections 3)' });
  t.is(admission.refusal('out', 1_000_000, null), undefined, 'no listener limit');
});

test('admission: the process-wide limit counts what every listener holds open', (t) => {
  const admission = new Admission(2, gate(false));
  admission.opened();
  t.is(admission.refusal('a', 0, null), undefined);
  admission.opened();
  t.is(admission.open, 2);
  t.deepEqual(admission.refusal('b', 0, null), { reason: 'max_connections', message: 'refused: 2 connections open in this process (overload.max_connections 2)' });
  admission.closed();
  t.is(admission.refusal('b', 0, null), undefined);
});

test('admission: the warm path\'s connections count against the process-wide limit through the counters shared with the core', (t) => {
  const admission = new Admission(2, gate(false));
  t.deepEqual([...admission.counters], [0, 0, 2, 0x7fffffff]);
  admission.opened();
  admission.counters[ADMISSION_CORE_OPEN] = 1; // as warm.c counts a connection it accepted
  t.is(admission.open, 2);
  t.is(admission.counters[ADMISSION_JS_OPEN], 1);
  t.deepEqual(admission.refusal('b', 0, null), { reason: 'max_connections', message: 'refused: 2 connections open in this process (overload.max_connections 2)' });
  admission.counters[ADMISSION_CORE_OPEN] = 0;
  t.is(admission.refusal('b', 0, null), undefined);
  t.is(new Admission(null, gate(true)).counters[2], -1, 'no process-wide limit');
  t.is(new Admission(null, gate(true)).counters[3], 0, 'while overloaded the core hands every connection to JavaScript');
});

test('admission: while overloaded every new connection is shed, and the overload is asked only after the limits', (t) => {
  const overloaded = gate(true);
  const admission = new Admission(1, overloaded);
  t.deepEqual(admission.refusal('out', 0, 5), { reason: 'overload', message: 'refused: overloaded (fds: 3 free of 256 descriptors (min_free_fds 64))' });
  t.is(overloaded.asked, 1);
  t.is(admission.refusal('out', 5, 5)?.reason, 'listener_max_connections');
  admission.opened();
  t.is(admission.refusal('out', 0, null)?.reason, 'max_connections');
  t.is(overloaded.asked, 1, 'a connection refused by a limit is not counted as shed');
});
