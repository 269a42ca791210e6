/**
 * The Kubernetes examples (deploy/kubernetes/) against the Kubernetes API schema,
 * offline, from npm: kubernetes-models' validators (ajv, compiled from the API's
 * OpenAPI schema: types, required fields, enums, formats) and, because that
 * schema lets unknown fields through (the API server rejects them only with
 * strict field validation), TypeScript's excess-property check of each document
 * against the same package's generated interfaces. Mutated copies prove a wrong
 * field, a wrong type and a missing field are caught. Then what the examples
 * promise: least privileges, and synhold commands that run as written.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { withNetns } from '../helpers/netns.js';
import { synhold, synholdAsync } from '../helpers/cli.js';
import { kill, until } from '../helpers/faults.js';
import { StateStore } from '../../src/protect/state.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const DIR = join(root, 'deploy/kubernetes');

interface Doc {
  apiVersion: string;
  kind: string;
  [k: string]: unknown;
}

function manifests(): [string, Doc[]][] {
  return readdirSync(DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((f) => [f, parseAllDocuments(readFileSync(join(DIR, f), 'utf8')).map((d) => d.toJS({ maxAliasCount: 100 }) as Doc)]);
}

/** kubernetes-models' module for a kind: core v1 at v1/Kind, groups at group/version/Kind. */
const modelPath = (d: Doc) => `kubernetes-models/${d.apiVersion}/${d.kind}`;

/** The schema validator's complaints (kubernetes-models, ajv). */
async function schemaErrors(d: Doc): Promise<string[]> {
  const mod = (await import(modelPath(d))) as Record<string, new (x: unknown) => { validate(): void }>;
  const Model = mod[d.kind];
  if (!Model) return [`no model for ${d.apiVersion} ${d.kind}`];
  try {
    new Model(d).validate();
    return [];
  } catch (e) {
    return [(e as Error).message];
  }
}

/**
 * TypeScript's complaints about the documents as literals of kubernetes-models'
 * interfaces (excess properties included), compiled in memory beside the
 * repository's node_modules.
 */
function typeErrors(docs: Doc[]): string[] {
  const file = join(root, 'k8s-manifest-check.ts');
  const source =
    docs.map((d, i) => `import type { I${d.kind} as T${i} } from '${modelPath(d)}';`).join('\n') +
    '\n' +
    docs.map((d, i) => `export const d${i}: T${i} = ${JSON.stringify(d, null, 1)};`).join('\n');
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, ...rest) => (name === file ? ts.createSourceFile(name, source, lang) : getSourceFile(name, lang, ...rest));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => name === file || fileExists(name);
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, ' '));
}

async function problems(docs: Doc[]): Promise<string[]> {
  const out: string[] = [];
  for (const d of docs) out.push(...(await schemaErrors(d)).map((e) => `${d.kind}: ${e}`));
  return [...out, ...typeErrors(docs)];
}

test('deploy/kubernetes: every document is valid against the Kubernetes API schema, no unknown field', async () => {
  const all = manifests();
  assert.deepEqual(
    all.map(([f]) => f),
    ['daemonset.yaml', 'sidecar.yaml'],
  );
  for (const [file, docs] of all) {
    assert.ok(docs.length > 0, file);
    assert.deepEqual(await problems(docs), [], file);
  }
});

type Mutate = (d: Doc) => void;
/** The pod spec of a workload. */
const podSpec = (d: Doc) => (d as unknown as { spec: { template: { spec: Record<string, unknown> } } }).spec.template.spec;
const firstContainer = (d: Doc) => (podSpec(d).containers as Record<string, unknown>[])[0]!;

test('the manifest check catches a misspelt field, a wrong type, a missing required field, a misplaced field', async () => {
  const mutations: [string, Mutate, RegExp][] = [
    ['misspelt field', (d) => (podSpec(d).hostNetwrok = true), /hostNetwrok\W+ does not exist in type 'IPodSpec'/],
    ['misspelt nested field', (d) => (firstContainer(d).securityContxt = {}), /securityContxt\W+ does not exist in type 'IContainer'/],
    ['wrong type', (d) => (podSpec(d).hostNetwork = 'yes'), /hostNetwork must be boolean|Type 'string' is not assignable to type 'boolean'/],
    ['missing required field', (d) => delete firstContainer(d).name, /containers\/0 must have required property '?name'?/],
    [
      'field at the wrong level',
      (d) => (d.replicas = 2),
      /replicas\W+ does not exist in type 'IDaemonSetSpec'|replicas\W+ does not exist in type 'IDaemonSet'/,
    ],
  ];
  const [, docs] = manifests().find(([f]) => f === 'daemonset.yaml')!;
  for (const [what, mutate, expected] of mutations) {
    const copy = structuredClone(docs);
    mutate(copy.find((d) => d.kind === 'DaemonSet')!);
    const p = await problems(copy);
    assert.ok(
      p.some((l) => expected.test(l)),
      `${what}: ${JSON.stringify(p)}`,
    );
  }
});

interface Container {
  name: string;
  command?: string[];
  securityContext?: {
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { add?: string[]; drop?: string[] };
  };
}

function containers(d: Doc): Container[] {
  const s = podSpec(d) as { containers: Container[]; initContainers?: Container[] };
  return [...(s.initContainers ?? []), ...s.containers];
}

test("least privileges: every container drops ALL, adds at most NET_ADMIN (synhold's only), never privileged or escalating; no hostPID", () => {
  for (const [file, docs] of manifests()) {
    for (const d of docs.filter((x) => x.kind === 'DaemonSet' || x.kind === 'Deployment')) {
      assert.notEqual(podSpec(d).hostPID, true, `${file}: hostPID`);
      for (const c of containers(d)) {
        const sc = c.securityContext ?? {};
        const where = `${file} ${c.name}`;
        assert.deepEqual(sc.capabilities?.drop, ['ALL'], `${where}: drops ALL`);
        const add = sc.capabilities?.add ?? [];
        assert.deepEqual(add, c.command?.[0] === 'synhold' ? ['NET_ADMIN'] : [], `${where}: adds ${add.join(',')}`);
        assert.notEqual(sc.privileged, true, where);
        assert.equal(sc.allowPrivilegeEscalation, false, where);
        assert.equal(sc.readOnlyRootFilesystem, true, where);
      }
    }
  }
});

test("the manifests' synhold commands run as written (a fresh namespace, this kernel): setup, status, daemon", async () => {
  const commands = manifests()
    .flatMap(([, docs]) => docs.filter((d) => d.kind !== 'Namespace').flatMap(containers))
    .map((c) => c.command ?? [])
    .filter((c) => c[0] === 'synhold')
    .map((c) => c.slice(1).map((a) => a.replace('$(HOST_IP)', '127.0.0.1')));
  assert.equal(commands.filter((c) => c[0] === 'setup').length, 2);
  assert.equal(commands.filter((c) => c[0] === 'daemon').length, 2);
  for (const argv of commands) {
    await withNetns(async (ns) => {
      try {
        if (argv[0] === 'daemon') {
          const r = synhold(['--netns', ns.name, 'setup', '--port', '8080', '--backend', 'nfqueue', '--migrate-req', 'off']);
          assert.equal(r.status, 0, r.stderr);
          const d = synholdAsync(['--netns', ns.name, ...argv.map((a) => a.replace(/^.*:9473$/, '127.0.0.1:19475'))]);
          await until('the daemon socket', () => existsSync(StateStore.for(ns.name).daemonSocketPath));
          const status = synhold(['--netns', ns.name, 'status']);
          assert.equal(status.status, 0, `the probe's synhold status: ${status.stderr}`);
          kill(d.pid, 'SIGTERM');
          assert.equal((await d.done).status, 0);
        } else {
          assert.equal(synhold(['--netns', ns.name, 'status']).status, 3, 'not set up yet: the probe fails');
          const r = synhold(['--netns', ns.name, ...argv, '--backend', 'nfqueue']);
          assert.equal(r.status, 0, `synhold ${argv.join(' ')}: ${r.stderr}`);
        }
      } finally {
        synhold(['--netns', ns.name, 'teardown']);
      }
    });
  }
});
