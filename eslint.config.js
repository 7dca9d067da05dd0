// Lint: eslint's and typescript-eslint's recommended rules, no type-aware rules (fast),
// plus the direction of imports (README "Layout"): the data plane (proxy/) never
// imports the control plane's code (xds/), except its composition root
// (proxy/cmd/), which wires both; the process runtime (proxy/runtime/) imports
// nothing else of the project; prom-client comes through proxy/runtime/prom-client.ts.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Static imports and re-exports (type-only ones too) matching any `[regex, message]`, and dynamic import() of them. */
function forbidImports(...rules) {
  return {
    'no-restricted-imports': ['error', { patterns: rules.map(([regex, message]) => ({ regex, message })) }],
    // esquery reads the regex between slashes: a slash inside must be escaped.
    'no-restricted-syntax': ['error', ...rules.map(([regex, message]) => ({ selector: `ImportExpression[source.value=/${regex.replaceAll('/', '\\/')}/]`, message }))],
  };
}

const RUNTIME_ONLY = ['^\\.\\./', 'proxy/runtime/ is the process runtime: it imports nothing of the project outside proxy/runtime/'];
/** prom-client's package entry also loads its push gateway (https, zlib, TLS): an idle sidecar must not pay for it. */
const PROM_CLIENT = ['^prom-client$', 'import prom-client through proxy/runtime/prom-client.ts (the package entry loads its push gateway)'];

export default tseslint.config(
  { ignores: ['dist/', 'build/', 'node_modules/', 'xds/generated/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', URL: 'readonly', performance: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['proxy/**/*.ts', 'xds/**/*.ts'],
    ignores: ['proxy/runtime/prom-client.ts'],
    rules: forbidImports(PROM_CLIENT),
  },
  {
    files: ['proxy/**/*.ts'],
    ignores: ['proxy/cmd/**'],
    rules: forbidImports(PROM_CLIENT, ['(^|/)xds/', 'proxy/ is the data plane: it does not import xds/ (the control plane implements the data plane\'s interfaces; proxy/cmd/ wires them)']),
  },
  {
    files: ['proxy/runtime/**/*.ts'],
    ignores: ['proxy/runtime/prom-client.ts'],
    rules: forbidImports(PROM_CLIENT, RUNTIME_ONLY),
  },
  {
    files: ['proxy/runtime/prom-client.ts'],
    rules: forbidImports(RUNTIME_ONLY),
  },
);
