// Parsing a YAML file of top-level lists item by item (the inventory): the
// same data as the whole document, or undefined (parse it whole) for any
// layout it does not split.

import test from 'ava';
import { parseDocument } from 'yaml';
import { parseByItem } from '../../xds/vm-manager/yaml-items.js';

const whole = (text: string): unknown => parseDocument(text).toJS() as unknown;

const SPLIT: Record<string, string> = {
  'block lists, nested lists and maps, comments between items': `
# hypervisors first
hypervisors:
  - id: hv-1
    vsock_mode: host-relay
    relay_port: 15100
  # a comment between items
  - { id: hv-2, vsock_mode: direct }
vms:
  - id: web-1
    hypervisor: hv-1
    addresses:
      - 10.0.0.1
      - "2001:db8::1"
    sidecar: { tcp_port: 15001 }
    services:
    - name: web
      port: 8080
    labels: { team: a }

  - id: db-1   # trailing comment
    hypervisor: hv-2
    note: |
      two lines
      - not an item
    sidecar: null
`,
  'items at column 0': 'vms:\n- id: a\n  cid: 3\n- id: b\n  cid: 4\nhypervisors: []\n',
  'an empty list value and an inline value': 'vms:\nhypervisors: [{ id: h, vsock_mode: direct }]\n',
  'CRLF line ends': 'vms:\r\n  - id: a\r\n    cid: 3\r\n  - id: b\r\n',
  'an anchor used within its own item': 'vms:\n  - id: a\n    addresses: &a [10.0.0.1]\n    also: *a\n',
  'a block map value': 'vms:\n  a: 1\n  b: 2\n',
};

for (const [name, text] of Object.entries(SPLIT)) {
  test(`split item by item, the same data as the whole document: ${name}`, (t) => {
    const data = parseByItem(text);
    t.not(data, undefined);
    t.deepEqual(data, whole(text));
  });
}

test('a file of comments only is null, as the whole document', (t) => {
  t.is(parseByItem('# nothing yet\n\n'), null);
  t.is(whole('# nothing yet\n\n'), null);
});

const WHOLE: Record<string, string> = {
  'flow style at the top': '{ vms: [{ id: a }] }\n',
  'a document marker': '---\nvms:\n  - id: a\n',
  'a directive': '%YAML 1.2\n---\nvms: []\n',
  'an alias to an anchor of another item': 'vms:\n  - id: a\n    sidecar: &s { tcp_port: 1 }\n  - id: b\n    sidecar: *s\n',
  'a merge key at the top': 'base: &b { x: 1 }\n<<: *b\n',
  'a duplicate top-level key': 'vms: []\nvms: []\n',
  'a quoted key': '"vms":\n  - id: a\n',
  'tab indentation': 'vms:\n\t- id: a\n',
  'a sequence at the top': '- a\n- b\n',
  'a line back left of the list': 'vms:\n    - id: a\n  - id: b\n',
  'a syntax error in an item': 'vms:\n  - id: a\n   bad: [\n',
  'a top-level line that is no key': 'vms:\n  - id: a\nplain text\n',
};

for (const [name, text] of Object.entries(WHOLE)) {
  test(`not split, parsed whole instead: ${name}`, (t) => {
    t.is(parseByItem(text), undefined);
  });
}
