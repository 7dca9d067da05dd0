import test from 'ava';
import { createLogger } from '../../proxy/runtime/log.js';
import { ProxyMetrics } from '../../proxy/metrics.js';
import { RefusalLog } from '../../proxy/runtime/refusal-log.js';
import { InboundAuthorization } from '../../proxy/policy/inbound-authorization.js';
import { inboundPolicies, type RbacFilter } from '../../proxy/policy/rbac.js';
import { LogCapture } from '../helpers/log-capture.js';
import { sampleValue } from '../helpers/sidecars.js';

const A = 'spiffe://td/vm/a';
const B = 'spiffe://td/vm/b';
const allowA: RbacFilter = { rules: { action: 'ALLOW', policies: [{ name: 'only-a', principals: [{ kind: 'exact', id: A }] }] }, shadowRules: null };
const denyB: RbacFilter = { rules: { action: 'DENY', policies: [{ name: 'no-b', principals: [{ kind: 'exact', id: B }] }] }, shadowRules: null };

function setup() {
  const logs = new LogCapture();
  const metrics = new ProxyMetrics({ processMetrics: false });
  const authorization = new InboundAuthorization({ metrics, refusals: new RefusalLog(createLogger({ level: 'debug', destination: logs })) });
  const count = async (name: string, labels: Record<string, string> = {}) => sampleValue(await metrics.registry.metrics(), name, labels);
  return { logs, authorization, count };
}
const request = (principal: string, port = 8080) => ({ listener: 'in', port, principal, fields: { src: '10.0.0.1:1' } });

test('a port without policies admits without counting; a port with policies counts each decision', async (t) => {
  const { authorization, count, logs } = setup();
  t.is(authorization.admit(request(B)), 'unselected');
  t.is(await count('vsockmesh_rbac_allowed_total'), 0);
  authorization.replace(inboundPolicies([{ port: 8080, filters: [allowA] }]));
  t.is(authorization.admit(request(A)), 'allowed');
  t.false(authorization.admit(request(B)));
  t.is(authorization.admit(request(B, 9090)), 'unselected', 'another port');
  t.is(await count('vsockmesh_rbac_allowed_total', { listener: 'in' }), 1);
  t.is(await count('vsockmesh_rbac_denied_total', { listener: 'in', policy: 'default_deny' }), 1);
  t.is(await count('vsockmesh_connections_refused_total', { listener: 'in', reason: 'policy_denied' }), 1);
  t.like(logs.withReason('policy_denied')[0], { listener: 'in', principal: B, policy: 'default_deny', src: '10.0.0.1:1' });
});

test('allowed on a port with a shadow filter: shadowed (decided per connection), whether or not the shadow would deny', async (t) => {
  const { authorization, count, logs } = setup();
  const shadowDenyB: RbacFilter = { rules: { action: 'ALLOW', policies: [{ name: 'any', principals: [{ kind: 'any' }] }] }, shadowRules: denyB.rules };
  authorization.replace(inboundPolicies([{ port: 8080, filters: [shadowDenyB] }]));
  t.is(authorization.admit(request(A)), 'shadowed');
  t.is(authorization.admit(request(B)), 'shadowed');
  t.is(await count('vsockmesh_rbac_allowed_total', { listener: 'in' }), 2);
  t.is(await count('vsockmesh_rbac_shadow_denied_total', { listener: 'in', policy: 'no-b' }), 1);
  t.is(logs.withReason('policy_shadow_denied').length, 1);
  authorization.replace(inboundPolicies([{ port: 8080, filters: [allowA, denyB] }]));
  t.is(authorization.admit(request(A)), 'allowed', 'no shadow filter: the same answer for every connection of A');
});

test('new policies close the watched connections they no longer allow, once; closed connections are not watched', async (t) => {
  const { authorization, count, logs } = setup();
  const closed: string[] = [];
  authorization.watch(request(A), () => closed.push('a'));
  authorization.watch(request(B), () => closed.push('b'));
  const unwatch = authorization.watch(request(B), () => closed.push('b-gone'));
  unwatch();
  authorization.watch(request(B, 9090), () => closed.push('b-9090'));
  authorization.replace(inboundPolicies([{ port: 8080, filters: [denyB] }]));
  t.deepEqual(closed, ['b']);
  authorization.replace(inboundPolicies([{ port: 8080, filters: [denyB, allowA] }]));
  t.deepEqual(closed, ['b'], 'a closed connection is not closed again');
  t.is(await count('vsockmesh_rbac_revoked_total', { listener: 'in', policy: 'no-b' }), 1);
  t.like(logs.withReason('policy_revoked')[0], { principal: B, policy: 'no-b' });
});
