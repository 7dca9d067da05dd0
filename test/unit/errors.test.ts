// One base error with a stable code, and its mapping to gRPC statuses both
// ways (xds/grpc-status.ts): every domain error carries the code its API
// answers with, recognised by class or code and never by the shape of an
// object; a client gets the same code back as a CallError.

import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { ConfigError } from '../../proxy/runtime/config-file.js';
import { NotFoundError, VsockmeshError, errorCode, type ErrorCode } from '../../proxy/runtime/errors.js';
import { CallError } from '../../xds/call-error.js';
import { MeshChangeConflictError } from '../../xds/control-plane/mesh-store.js';
import { callError, statusName, statusOf } from '../../xds/grpc-status.js';
import { WireError } from '../../xds/vm-manager/codec.js';
import { InventoryError } from '../../xds/vm-manager/inventory.js';
import { CapacityError, ValidationError } from '../../xds/vm-manager/registry.js';
import { UnavailableError } from '../../xds/vm-manager/server.js';
import { StateFileError } from '../../xds/vm-manager/state-load.js';
import { StoreCompactedError, StoreUnavailableError } from '../../xds/store/store.js';

/** Every code, checked by the compiler against ErrorCode (a missing or unknown key does not compile). */
const EVERY_CODE: Record<ErrorCode, true> = {
  CANCELLED: true,
  UNKNOWN: true,
  INVALID_ARGUMENT: true,
  DEADLINE_EXCEEDED: true,
  NOT_FOUND: true,
  ALREADY_EXISTS: true,
  PERMISSION_DENIED: true,
  RESOURCE_EXHAUSTED: true,
  FAILED_PRECONDITION: true,
  ABORTED: true,
  OUT_OF_RANGE: true,
  UNIMPLEMENTED: true,
  INTERNAL: true,
  UNAVAILABLE: true,
  DATA_LOSS: true,
  UNAUTHENTICATED: true,
};

function serviceError(code: grpc.status, details: string, metadata: Record<string, string>): grpc.ServiceError {
  const m = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) m.set(k, v);
  return Object.assign(new Error(`${code} ${details}`), { code, details, metadata: m });
}

test('every code is a gRPC status name and every gRPC status but OK is a code', (t) => {
  const grpcNames = Object.keys(grpc.status).filter((k) => Number.isNaN(Number(k)) && k !== 'OK');
  t.deepEqual(Object.keys(EVERY_CODE).sort(), grpcNames.sort());
});

for (const code of Object.keys(EVERY_CODE) as ErrorCode[]) {
  test(`${code}: a server answers it with that status, and the client gets ${code} back`, (t) => {
    const status = statusOf(new VsockmeshError(code, 'what happened'));
    t.is(status.code, grpc.status[code]);
    t.is(status.details, 'what happened');
    t.is(statusName(status.code), code);
    const back = callError(serviceError(status.code, status.details, { 'content-type': 'application/grpc' }));
    t.true(back instanceof CallError);
    t.is(back.code, code);
    t.is(errorCode(back), code);
    t.is(back.details, 'what happened');
    t.is(back.message, `${code}: what happened`);
  });
}

test('each domain error carries the code its API answers with', (t) => {
  const cases: Array<[Error, ErrorCode]> = [
    [new ValidationError('vsock_cid', 'must be 3..4294967294'), 'INVALID_ARGUMENT'],
    [new WireError('vm', 'is required'), 'INVALID_ARGUMENT'],
    [new ConfigError('mesh.yaml', ['services[0].port: required']), 'INVALID_ARGUMENT'],
    [new InventoryError('inventory.yaml', ['vms[0].cid: required']), 'INVALID_ARGUMENT'],
    [new NotFoundError('VM "web-1"'), 'NOT_FOUND'],
    [new CapacityError('vm_id: the registry holds 10 VMs, at most 10'), 'RESOURCE_EXHAUSTED'],
    [new UnavailableError('not applied: the VM manager is stopping'), 'UNAVAILABLE'],
    [new StoreUnavailableError('not applied: cannot write mesh state file: ENOSPC (write)'), 'UNAVAILABLE'],
    [new StoreCompactedError(3, 10), 'OUT_OF_RANGE'],
    [new MeshChangeConflictError('service "web"', 3, 5), 'ABORTED'],
    [new StateFileError('/state/vms.json', 3, 'not JSON'), 'DATA_LOSS'],
  ];
  for (const [err, code] of cases) {
    t.true(err instanceof VsockmeshError, err.name);
    t.is(errorCode(err), code, err.name);
    t.is(statusOf(err).code, grpc.status[code], err.name);
    t.is(statusOf(err).details, err.message, `${err.name}: the message is the status text`);
    t.is(err.name, err.constructor.name, 'the name says which error it is');
  }
});

test('a NotFoundError says what was not found, in its own words when given', (t) => {
  const vm = new NotFoundError('VM "web-1"');
  t.is(vm.message, 'VM "web-1" not found');
  t.is(vm.what, 'VM "web-1"');
  t.is(new NotFoundError('route "r"', 'no route "r"').message, 'no route "r"');
});

test('anything else is INTERNAL, and an object that merely has a code is not recognised', (t) => {
  t.deepEqual(statusOf(new TypeError('x is undefined')), { code: grpc.status.INTERNAL, details: 'internal error: x is undefined' });
  t.is(statusOf('a string').code, grpc.status.INTERNAL);
  const lookalike = Object.assign(new Error('NOT_FOUND: nope'), { code: 'NOT_FOUND' });
  t.is(errorCode(lookalike), undefined);
  t.is(statusOf(lookalike).code, grpc.status.INTERNAL);
  t.is(errorCode({ code: 'OUT_OF_RANGE' }), undefined);
});

test('a client error says whether the server answered: a status grpc-js made up locally carries no metadata', (t) => {
  t.true(callError(serviceError(grpc.status.UNAVAILABLE, 'not applied: cannot write state file: ENOSPC', { 'content-type': 'application/grpc' })).answered);
  const local = callError(serviceError(grpc.status.UNAVAILABLE, 'No connection established', {}));
  t.false(local.answered);
  t.is(local.code, 'UNAVAILABLE');
});

test('a status number gRPC does not define, or OK on a failure, becomes UNKNOWN', (t) => {
  t.is(callError(serviceError(99 as grpc.status, 'odd', {})).code, 'UNKNOWN');
  t.is(callError(serviceError(grpc.status.OK, 'odd', {})).code, 'UNKNOWN');
  t.is(statusName(99 as grpc.status), 'UNKNOWN');
});
