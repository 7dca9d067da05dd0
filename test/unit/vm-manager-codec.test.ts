// Watch events on the wire (xds/vm-manager/codec.ts, through the VM manager's
// protocol buffer descriptors): a hypervisor that left the registry is a
// HYPERVISOR event with `hypervisor_removed`, which a client built before the
// field reads as the hypervisor's record again rather than a Type it would
// end its stream on.

import test from 'ava';
import { readFileSync } from 'node:fs';
import protobuf from 'protobufjs/light.js';
import type { VmEvent } from '../../proxy/resolve/types.js';
import { CONVERSION, protoJsonPath } from '../../xds/proto-json.js';
import type { VmEvent__Output } from '../../xds/generated/vsockmesh/vmmanager/v1/VmEvent.js';
import { eventFromWire, eventToWire } from '../../xds/vm-manager/codec.js';

const EVENT = 'vsockmesh.vmmanager.v1.VmEvent';
const eventType = (): protobuf.Type => protobuf.Root.fromJSON(JSON.parse(readFileSync(protoJsonPath('vm_manager'), 'utf8')) as protobuf.INamespace).lookupType(EVENT);
const hv1 = { hypervisorId: 'hv-1', vsockMode: 'host-relay' as const, relayPort: 15100 };

/** `event` encoded as the server sends it and decoded by a client whose VmEvent is `reader`. */
function overTheWire(event: VmEvent, reader: protobuf.Type = eventType()): VmEvent__Output {
  const current = eventType();
  const bytes = current.encode(current.fromObject(eventToWire(event))).finish();
  return reader.toObject(reader.decode(bytes), CONVERSION) as VmEvent__Output;
}

test('hypervisor-removed: a HYPERVISOR event with hypervisor_removed and its last record, read back as hypervisor-removed', (t) => {
  const event: VmEvent = { type: 'hypervisor-removed', hypervisor: hv1, revision: 42 };
  const wire = overTheWire(event);
  t.like(wire, { type: 'HYPERVISOR', revision: 42, hypervisor_removed: true, hypervisor: { hypervisor_id: 'hv-1', vsock_mode: 'VSOCK_MODE_HOST_RELAY', relay_port: 15100 } });
  t.deepEqual(eventFromWire(wire), event);
});

test('a registered hypervisor is a HYPERVISOR event without hypervisor_removed, as before', (t) => {
  const event: VmEvent = { type: 'hypervisor', hypervisor: hv1, revision: 7 };
  const wire = overTheWire(event);
  t.is(wire.hypervisor_removed, false);
  t.deepEqual(eventFromWire(wire), event);
});

test('a client built before hypervisor_removed reads the event as the hypervisor record and goes on; a Type it did not know would have ended its stream', (t) => {
  const old = eventType();
  old.remove(old.fields.hypervisor_removed!);
  const wire = overTheWire({ type: 'hypervisor-removed', hypervisor: hv1, revision: 42 }, old);
  t.false('hypervisor_removed' in wire, 'the old descriptors do not know the field');
  t.deepEqual(eventFromWire(wire), { type: 'hypervisor', hypervisor: hv1, revision: 42 }, "what the old client's decoding (the same for HYPERVISOR) makes of it");
  t.throws(() => eventFromWire({ ...wire, type: 6 as unknown as VmEvent__Output['type'] }), { message: /unknown event type 6/ });
});
