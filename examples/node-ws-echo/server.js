// The media benchmark's reference: a Node `ws` echo written as Twilio's Media Streams samples are.
// Every message is JSON.parse'd and switched on `event`; a media frame goes back as a new object.
//
// Usage: node examples/node-ws-echo/server.js [HOST:PORT] [echo|silent]   (default 127.0.0.1:9000 echo)
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const [host, port] = (process.argv[2] || '127.0.0.1:9000').split(':');
const echo = process.argv[3] !== 'silent';

const server = http.createServer((req, res) => {
  if (req.method === 'POST' && req.url.startsWith('/twilio/voice')) {
    // The samples read the form before answering; so do the Rust floor and the server.
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      res.writeHead(200, { 'Content-Type': 'text/xml; charset=utf-8' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        + `<Stream url="ws://${req.headers.host}/twilio/stream"/></Connect></Response>`);
    });
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, path: '/twilio/stream' });

wss.on('connection', (ws) => {
  let streamSid = null;
  ws.on('message', (message) => {
    const msg = JSON.parse(message);
    switch (msg.event) {
      case 'connected':
        break;
      case 'start':
        streamSid = msg.start.streamSid;
        break;
      case 'media':
        if (echo) {
          ws.send(JSON.stringify({ event: 'media', streamSid, media: { payload: msg.media.payload } }));
        }
        break;
      case 'stop':
        // Twilio closes the socket itself after `stop`.
        break;
      default:
        break;
    }
  });
  ws.on('error', () => {});
});

// The server's and the floor's listen backlog, so a burst meets the same queue.
server.listen({ host, port: Number(port), backlog: 4096 });
