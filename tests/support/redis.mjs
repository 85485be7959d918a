// Real Redis servers for the tests: Debian's redis-server and redis-sentinel, on 127.0.0.1, no persistence,
// started as children and stopped by PID (t.after). Readiness is a PING answered, never a sleep.
//
//   const r = await startRedis(t);                  // r.url = "redis://127.0.0.1:PORT"
//   await r.stop(); await r.start();                // same port, to simulate an outage and a recovery
//   await r.cli('KEYS', '*')                        // a command through redis-cli, its stdout
//   const s = await startSentinelSet(t);            // a master, a replica and three sentinels
//   const c = await startCluster(t);                // a three-master Redis Cluster

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { pause } from './http.mjs';
import { freePort } from './passerelle.mjs';

export const REDIS_SERVER = '/usr/bin/redis-server';
export const REDIS_SENTINEL = '/usr/bin/redis-sentinel';
export const REDIS_CLI = '/usr/bin/redis-cli';

/** One RESP command over a fresh TCP connection; resolves the raw reply text, or null on a connection error. */
export function rawCommand(port, args, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let data = '';
    const done = (v) => { socket.destroy(); clearTimeout(timer); resolve(v); };
    const timer = setTimeout(() => done(null), timeoutMs);
    socket.on('connect', () => {
      socket.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(String(a))}\r\n${a}\r\n`).join('')}`);
    });
    socket.on('data', (d) => {
      data += d;
      if (data.endsWith('\r\n')) done(data);
    });
    socket.on('error', () => done(null));
  });
}

/** Wait until `check()` is truthy, polling every 50 ms, for at most timeoutMs. */
export async function waitFor(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await pause(50); // polling for a condition
  }
}

function child(bin, args, { cwd } = {}) {
  const proc = spawn(bin, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => { output += d; });
  proc.stderr.on('data', (d) => { output += d; });
  const exited = new Promise((resolve) => proc.on('close', resolve));
  return { proc, output: () => output, exited };
}

async function kill(c) {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  c.proc.kill('SIGKILL');
  await c.exited;
}

/**
 * A redis-server on 127.0.0.1 (`args` added to its command line). `stop()` kills it, `start()` starts it again on
 * the same port; both wait until it is down / answers PING.
 */
export async function startRedis(t, { args = [], port } = {}) {
  const p = port ?? await freePort();
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-redis-'));
  let c;
  const start = async () => {
    c = child(REDIS_SERVER, ['--port', String(p), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--protected-mode', 'no', ...args], { cwd: dir });
    await waitFor(`redis-server on ${p}`, async () => {
      if (c.proc.exitCode !== null) throw new Error(`redis-server exited:\n${c.output()}`);
      // A server that requires a password answers -NOAUTH: it is up all the same.
      const reply = await rawCommand(p, ['PING']);
      return reply?.startsWith('+PONG') || reply?.startsWith('-NOAUTH');
    });
  };
  const stop = async () => {
    await kill(c);
    await waitFor(`redis-server on ${p} to stop`, async () => (await rawCommand(p, ['PING'], 200)) === null);
  };
  await start();
  const r = {
    port: p,
    url: `redis://127.0.0.1:${p}`,
    dir,
    start,
    stop,
    pid: () => c.proc.pid,
    output: () => c.output(),
    cli: (...cmd) => cli(p, cmd),
  };
  t.after(async () => {
    await kill(c);
    await rm(dir, { recursive: true, force: true });
  });
  return r;
}

/** redis-cli against 127.0.0.1:port; resolves its stdout. */
export function cli(port, args) {
  return new Promise((resolve, reject) => {
    execFile(REDIS_CLI, ['-h', '127.0.0.1', '-p', String(port), ...args], (err, stdout, stderr) => {
      if (err) reject(new Error(`redis-cli ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * A master, its replica and three sentinels (quorum 2, down-after 1 s), all on 127.0.0.1.
 * `failover()` kills the master and waits until the sentinels promote the replica.
 */
export async function startSentinelSet(t, { masterName = 'passerelle' } = {}) {
  const master = await startRedis(t);
  const replica = await startRedis(t, { args: ['--replicaof', '127.0.0.1', String(master.port)] });
  await waitFor('replica in sync', async () => (await replica.cli('INFO', 'replication')).includes('master_link_status:up'));
  const sentinels = [];
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-sentinel-'));
    const conf = path.join(dir, 'sentinel.conf');
    await writeFile(conf, [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${masterName} 127.0.0.1 ${master.port} 2`,
      `sentinel down-after-milliseconds ${masterName} 1000`,
      `sentinel failover-timeout ${masterName} 5000`,
      `sentinel parallel-syncs ${masterName} 1`,
      '',
    ].join('\n'));
    const c = child(REDIS_SENTINEL, [conf], { cwd: dir });
    t.after(async () => {
      await kill(c);
      await rm(dir, { recursive: true, force: true });
    });
    sentinels.push({ port, url: `redis://127.0.0.1:${port}`, output: c.output });
  }
  for (const s of sentinels) {
    await waitFor(`sentinel ${s.port} sees the replica and the other sentinels`, async () => {
      const info = await rawCommand(s.port, ['SENTINEL', 'MASTER', masterName]);
      if (!info) return false;
      const lines = info.split('\r\n');
      const field = (k) => lines[lines.indexOf(k) + 2];
      return field('num-slaves') === '1' && field('num-other-sentinels') === '2';
    }, 30_000);
  }
  const currentMaster = async () => {
    const reply = await rawCommand(sentinels[0].port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName]);
    return reply ? Number(reply.split('\r\n')[4]) : undefined;
  };
  return {
    masterName,
    master,
    replica,
    sentinels,
    currentMaster,
    async failover() {
      await master.stop();
      await waitFor('sentinels to promote the replica', async () => (await currentMaster()) === replica.port, 30_000);
      await waitFor('the replica to accept writes', async () => (await replica.cli('INFO', 'replication')).includes('role:master'));
    },
  };
}

/** Three redis-server in cluster mode, joined with `redis-cli --cluster create`. */
export async function startCluster(t) {
  const nodes = [];
  for (let i = 0; i < 3; i++) {
    // The cluster bus gets a port picked like the node's: by default it is the node's + 10000, which may be in
    // the ephemeral range and taken by an outgoing connection (seen: "bind: Address already in use").
    const bus = await freePort();
    nodes.push(await startRedis(t, { args: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000', '--cluster-port', String(bus)] }));
  }
  await cli(nodes[0].port, ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-yes']);
  for (const n of nodes) {
    await waitFor(`cluster state ok on ${n.port}`, async () => (await n.cli('CLUSTER', 'INFO')).includes('cluster_state:ok'));
  }
  return { nodes, urls: nodes.map((n) => n.url) };
}
