// Lint: eslint's and typescript-eslint's recommended rules, no type-aware rules (fast),
// plus the direction of imports (README "Layout"): the data plane (proxy/) never
// imports the control plane's code (xds/), except its composition root
// (proxy/cmd/), which wires both; the process runtime (proxy/runtime/) imports
// nothing else of the project.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Static imports and re-exports (type-only ones too) matching `regex`, and dynamic import() of them. */
function forbidImports(regex, message) {
  return {
    'no-restricted-imports': ['error', { patterns: [{ regex, message }] }],
    // esquery reads the regex between slashes: a slash inside must be escaped.
    'no-restricted-syntax': ['error', { selector: `ImportExpression[source.value=/${regex.replaceAll('/', '\\/')}/]`, message }],
  };
}

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
    files: ['proxy/**/*.ts'],
    ignores: ['proxy/cmd/**'],
    rules: forbidImports('(^|/)xds/', 'proxy/ is the data plane: it does not import xds/ (the control plane implements the data plane\'s interfaces; proxy/cmd/ wires them)'),
  },
  {
    files: ['proxy/runtime/**/*.ts'],
    rules: forbidImports('^\\.\\./', 'proxy/runtime/ is the process runtime: it imports nothing of the project outside proxy/runtime/'),
  },
);
