import test from 'ava';
import { answerHead, bodyFraming, passesVerbatim, switchingHead, tunnelsUpgrade } from '../../proxy/http/http1-answer.js';
import { answerText } from '../../proxy/http/http1-server.js';

const keepAlive11 = { http11: true, keepAlive: true, bodiless: false };

test('passesVerbatim: end-to-end headers and Transfer-Encoding pass; any other hop-by-hop header, in any case, does not', (t) => {
  t.true(passesVerbatim([]));
  t.true(passesVerbatim(['Content-Type', 'text/plain', 'Content-Length', '2', 'X-Connection-Id', '7']));
  t.true(passesVerbatim(['Transfer-Encoding', 'chunked', 'Date', 'x']));
  for (const name of ['Connection', 'KEEP-ALIVE', 'proxy-connection', 'Proxy-Authenticate', 'Proxy-Authorization', 'Upgrade', 'HTTP2-Settings']) t.false(passesVerbatim(['X-A', '1', name, 'v']), name);
});

test('bodyFraming: verbatim only to an HTTP/1.1 client whose connection carries on and a head that may pass', (t) => {
  t.is(bodyFraming(['Content-Length', '2'], keepAlive11), 'verbatim');
  t.is(bodyFraming(['Transfer-Encoding', 'chunked'], keepAlive11), 'verbatim');
  t.is(bodyFraming(['Content-Length', '2'], { ...keepAlive11, keepAlive: false }), 'length', 'Connection: close to write');
  t.is(bodyFraming(['Connection', 'close', 'Content-Length', '2'], keepAlive11), 'length', 'the upstream hop\'s Connection to drop');
  t.is(bodyFraming(['Connection', 'close', 'Transfer-Encoding', 'chunked'], keepAlive11), 'chunked');
  t.is(bodyFraming(['Transfer-Encoding', 'chunked'], { http11: false, keepAlive: true, bodiless: false }), 'close', 'HTTP/1.0 takes no chunks');
  t.is(bodyFraming(['Content-Length', '2'], { http11: false, keepAlive: true, bodiless: false }), 'length');
  t.is(bodyFraming(['Connection', 'close'], { ...keepAlive11, bodiless: true }), 'length', 'no body to frame');
});

test('answerHead: the status line, the end-to-end lines as received, this hop\'s framing and Connection', (t) => {
  const lines = ['Content-Type', 'text/plain', 'Connection', 'close', 'Keep-Alive', 'timeout=5', 'Transfer-Encoding', 'chunked', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2'];
  t.is(answerHead(200, 'OK', lines, 'chunked', true), 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n');
  t.is(answerHead(404, 'Not Found', ['Content-Length', '0'], 'length', false), 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  t.is(answerHead(200, 'OK', [], 'close', true), 'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n', 'a body ended by the close: the connection cannot carry on');
});

test('answerText: an answer made by the listener has its length, Connection as the client\'s connection goes on, and no body for HEAD', (t) => {
  t.is(answerText(503, { 'x-vsockmesh-reason': 'no_healthy_endpoint' }, 'no_healthy_endpoint\n', true, 1), 'HTTP/1.1 503 Service Unavailable\r\nx-vsockmesh-reason: no_healthy_endpoint\r\ncontent-length: 20\r\n\r\nno_healthy_endpoint\n');
  t.is(answerText(404, {}, 'x', false, 1), 'HTTP/1.1 404 Not Found\r\ncontent-length: 1\r\nconnection: close\r\n\r\nx');
  t.is(answerText(404, {}, 'x', true, 0), 'HTTP/1.1 404 Not Found\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\nx');
  t.is(answerText(404, {}, null, true, 1), 'HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n');
});

test("a 101's head for the client keeps its end-to-end lines and the protocol switched to, drops the upstream hop's other hop-by-hop lines, and says Connection: Upgrade", (t) => {
  const head = switchingHead('Switching Protocols', ['Upgrade', 'websocket', 'Connection', 'Upgrade', 'Keep-Alive', 'timeout=5', 'Sec-WebSocket-Accept', 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=']);
  t.is(head, 'HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
});

test('only a WebSocket upgrade is carried on as a tunnel (any case, one value); h2c, a list or none is not', (t) => {
  t.true(tunnelsUpgrade('websocket'));
  t.true(tunnelsUpgrade(' WebSocket '));
  t.false(tunnelsUpgrade('h2c'));
  t.false(tunnelsUpgrade('websocket, h2c'));
  t.false(tunnelsUpgrade(['websocket', 'websocket']));
  t.false(tunnelsUpgrade(undefined));
});
