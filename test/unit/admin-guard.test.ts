import test from 'ava';
import { adminRequestRefusal, type AdminRequestFacts } from '../../proxy/runtime/admin-guard.js';

const curlPost: AdminRequestFacts = { method: 'POST', host: '127.0.0.1:15000', origin: undefined, contentType: undefined, adminHeader: '1', localAddress: '127.0.0.1' };
const get = (host: string | undefined, localAddress = '127.0.0.1'): AdminRequestFacts => ({ method: 'GET', host, origin: undefined, contentType: undefined, adminHeader: undefined, localAddress });
const reason = (facts: AdminRequestFacts): string | undefined => adminRequestRefusal(facts)?.reason;

test('curl with the admin header may drain; a GET needs no header', (t) => {
  t.is(adminRequestRefusal(curlPost), undefined);
  t.is(adminRequestRefusal(get('127.0.0.1:15000')), undefined);
  t.is(adminRequestRefusal({ ...get('127.0.0.1:15000'), method: 'HEAD' }), undefined);
});

test('POST /drain as a browser sends it (foreign Host and Origin, text/plain) is refused for its Host first', (t) => {
  const browser: AdminRequestFacts = { method: 'POST', host: 'evil.example:15000', origin: 'http://evil.example:15000', contentType: 'text/plain;charset=UTF-8', adminHeader: undefined, localAddress: '127.0.0.1' };
  t.deepEqual(adminRequestRefusal(browser), {
    reason: 'admin_host_not_allowed',
    message: 'Host "evil.example:15000" does not name this admin endpoint (use 127.0.0.1 or localhost)',
  });
});

test('a simple POST (no admin header, a form or text content type) is refused even with a good Host', (t) => {
  for (const contentType of [undefined, 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    t.deepEqual(
      adminRequestRefusal({ ...curlPost, adminHeader: undefined, contentType }),
      { reason: 'admin_simple_request', message: 'POST needs the header "x-vsockmesh-admin: 1" (or content-type: application/json), which a web page cannot send here' },
      String(contentType),
    );
  }
  t.is(reason({ ...curlPost, adminHeader: '0' }), 'admin_simple_request', 'the header must say 1');
  t.is(reason({ ...curlPost, adminHeader: undefined, contentType: 'application/json' }), undefined);
  t.is(reason({ ...curlPost, adminHeader: undefined, contentType: 'Application/JSON; charset=utf-8' }), undefined);
  t.is(reason({ ...curlPost, method: 'PUT', adminHeader: undefined }), 'admin_simple_request', 'any method other than GET and HEAD mutates');
});

test('the admin header does not make up for a foreign Host (DNS rebinding)', (t) => {
  t.is(reason({ ...curlPost, host: 'evil.example:15000' }), 'admin_host_not_allowed');
  t.is(reason({ ...curlPost, host: 'evil.example' }), 'admin_host_not_allowed');
  t.is(reason(get('evil.example:15000')), 'admin_host_not_allowed', 'reads too: /config_dump is not for web pages');
});

test('Host: the address the request came in on, or localhost on loopback; the port is not checked (tunnels change it)', (t) => {
  for (const host of ['127.0.0.1:15000', '127.0.0.1', 'localhost:15000', 'LOCALHOST:8000', '127.0.0.1:8000']) t.is(reason(get(host)), undefined, host);
  t.is(reason(get('127.0.0.2:15000')), 'admin_host_not_allowed', 'another loopback address is another endpoint');
  t.is(reason(get('[::1]:15000', '::1')), undefined);
  t.is(reason(get('localhost:15000', '::1')), undefined);
  t.is(reason(get('[0:0:0:0:0:0:0:1]:15000', '::1')), undefined, 'IPv6 compared in canonical form');
  t.is(reason(get('127.0.0.1:15000', '::ffff:127.0.0.1')), undefined, 'an IPv4 client on a dual-stack socket');
  t.is(reason(get('10.0.0.5:15000', '10.0.0.5')), undefined, 'bound to a VM address: that address');
  t.is(reason(get('localhost:15000', '10.0.0.5')), 'admin_host_not_allowed', 'localhost names loopback, not 10.0.0.5');
  t.is(reason(get('web-1.internal:15000', '10.0.0.5')), 'admin_host_not_allowed', 'names are refused: a rebinding page sends its own');
});

test('a missing or malformed Host is refused', (t) => {
  t.deepEqual(adminRequestRefusal(get(undefined)), { reason: 'admin_host_not_allowed', message: 'Host (none) does not name this admin endpoint (use 127.0.0.1 or localhost)' });
  for (const host of ['', 'user@127.0.0.1', '127.0.0.1/x', '127.0.0.1?x', '127.0.0.1#x', '127.0.0.1:99999', '[::1']) t.is(reason(get(host)), 'admin_host_not_allowed', host);
});

test('an Origin other than the admin endpoint itself is refused, whatever the method', (t) => {
  for (const origin of ['http://evil.example', 'http://evil.example:15000', 'null', 'https://127.0.0.1:15000', 'http://127.0.0.1:15001', 'http://localhost:15000', 'not a url']) {
    t.is(reason({ ...curlPost, origin }), 'admin_cross_origin', origin);
    t.is(reason({ ...get('127.0.0.1:15000'), origin }), 'admin_cross_origin', `GET ${origin}`);
  }
  t.deepEqual(adminRequestRefusal({ ...curlPost, origin: 'http://evil.example' }), {
    reason: 'admin_cross_origin',
    message: 'Origin "http://evil.example" is not this admin endpoint: requests from web pages are refused',
  });
  t.is(reason({ ...curlPost, origin: 'http://127.0.0.1:15000' }), undefined, 'same origin');
  t.is(reason({ ...curlPost, host: 'localhost:15000', origin: 'http://LOCALHOST:15000' }), undefined, 'same origin, any case');
});
