// Run the Passerelle binary under test.
//
//   const port = await freePort(), adminPort = await freePort();
//   const p = await startPasserelle(toml);     // toml has listen/public_url/admin_listen with those ports
//   p.url       // public_url from the TOML
//   p.logs()    // everything it printed so far (stdout + stderr)
//   await p.stop();
//
//   const p = await launchPasserelle(t, toml, { adminPort, logName });   // stopped by t.after, which keeps the
//                                                                         // TOML and the output in tests/output/
//   const { code, stdout, stderr } = await runPasserelle(['check', '--config', file], { cwd });
//
// The binary is <repo>/target/release/passerelle, or $PASSERELLE_BIN. It may be rebuilt while the tests run:
// launchPasserelle and runPasserelle wait (bounded) for it and retry a spawn that fails while it is replaced.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { httpGetStatus, pause } from './http.mjs';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const PASSERELLE_BIN = process.env.PASSERELLE_BIN || path.join(REPO_ROOT, 'target', 'release', 'passerelle');
// Where each scenario's TOML and Passerelle output are kept (and the browser test's screenshots).
export const OUTPUT_DIR = fileURLToPath(new URL('../output/', import.meta.url));

export function binaryExists() {
  return existsSync(PASSERELLE_BIN);
}

/** The binary may be rebuilt (by the lead, or CI) while tests run: wait (bounded) until it is there. */
export async function waitForBinary(timeoutMs = 300_000) {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(PASSERELLE_BIN)) {
    if (Date.now() > deadline) throw new Error(`Passerelle binary not found at ${PASSERELLE_BIN} after ${timeoutMs} ms`);
    await pause(250); // polling for the file to reappear
  }
}

/** A TCP port free on 127.0.0.1 right now, below the ephemeral range (see BELOW_EPHEMERAL), never handed out twice. */
export async function freePort() {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    const port = BELOW_EPHEMERAL.low + Math.floor(Math.random() * (BELOW_EPHEMERAL.high - BELOW_EPHEMERAL.low));
    if (handedOut.has(port)) continue;
    if (await bindable(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found in ${BELOW_EPHEMERAL.low}-${BELOW_EPHEMERAL.high}`);
}

// Ports for Passerelle are picked below the kernel's ephemeral range: the test servers that listen on port 0 (the
// provider, the upstreams) and every outgoing connection's source port come from that range, so between the pick
// and Passerelle's bind none of them can take the port (seen: a replica's port given to the provider a moment
// later). Within this process no port is handed out twice.
const BELOW_EPHEMERAL = (() => {
  let low = 32768;
  try {
    low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || low;
  } catch {
    // not Linux: the usual default
  }
  return { low: 10000, high: Math.max(10001, Math.min(low, 65536)) };
})();
const handedOut = new Set();

function bindable(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A fresh session key as Passerelle expects it: base64 of 32 random bytes. */
export function sessionKey() {
  return randomBytes(32).toString('base64');
}

/** The name (no extension) a scenario's output is kept under in tests/output/: prefix, test name, _suffix. */
export function outputName(t, { prefix = '', suffix = '', max = 110 } = {}) {
  const name = (t.fullName || t.name || 'scenario').replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, max);
  return `${prefix}${name}${suffix ? `_${suffix}` : ''}`;
}

/** Keep a run's TOML and output, for diagnosis: tests/output/<name>.log. */
export async function keepOutput(name, toml, output) {
  await mkdir(OUTPUT_DIR, { recursive: true });
  await writeFile(path.join(OUTPUT_DIR, `${name}.log`), `${toml}\n----- passerelle output -----\n${output}`);
}

function tomlString(toml, section, key) {
  // Good enough for the configs the tests write: finds `key = "value"` after `[section]`.
  const start = toml.indexOf(`[${section}]`);
  if (start < 0) return undefined;
  const rest = toml.slice(start + section.length + 2);
  const end = rest.search(/^\s*\[/m);
  const body = end < 0 ? rest : rest.slice(0, end);
  const m = body.match(new RegExp(`^\\s*${key}\\s*=\\s*"([^"]*)"`, 'm'));
  return m?.[1];
}

/**
 * Spawn the binary (once it is there) with stdout and stderr piped. A spawn error (ENOENT / ETXTBSY while the binary
 * is being replaced) is retried a few times.
 */
export async function spawnPasserelle(args, { cwd, env, wrapper = [] }) {
  for (let attempt = 0; ; attempt++) {
    await waitForBinary();
    const [command, ...rest] = [...wrapper, PASSERELLE_BIN, ...args];
    const child = spawn(command, rest, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    const spawnError = await new Promise((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', resolve);
    });
    if (!spawnError) return child;
    if (attempt >= 5) throw new Error(`cannot start ${PASSERELLE_BIN}: ${spawnError.message}`);
    await pause(1000); // back-off before retrying the spawn
  }
}

/**
 * Run a Passerelle subcommand to completion (e.g. `check`), in `cwd`, with `env` added to the environment and the
 * variables named in `unset` removed from it. Resolves { code, signal, stdout, stderr }.
 */
export async function runPasserelle(args, { cwd, env = {}, unset = [], timeoutMs = 30_000 } = {}) {
  const childEnv = { ...process.env, ...env };
  for (const name of unset) delete childEnv[name];
  const child = await spawnPasserelle(args, { cwd, env: childEnv });
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

/**
 * `passerelle run --config FILE` with this TOML, written to a fresh temporary directory (its working directory,
 * removed by stop()). PASSERELLE_KEY is a fresh session key unless `env` gives one.
 */
async function runInBackground(toml, { env = {}, wrapper }) {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-test-'));
  const configFile = path.join(dir, 'config.toml');
  await writeFile(configFile, toml, { mode: 0o600 });
  const childEnv = {
    ...process.env,
    RUST_LOG: process.env.RUST_LOG || 'info',
    PASSERELLE_KEY: sessionKey(),
    ...env,
  };
  const child = await spawnPasserelle(['run', '--config', configFile], { cwd: dir, env: childEnv, wrapper });
  let output = '';
  let exited = null;
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  child.on('error', (e) => { output += `\n[spawn error] ${e.message}\n`; });
  const exitPromise = new Promise((resolve) => {
    child.on('close', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });

  let stopped = false;
  async function stop() {
    if (stopped) return exited;
    stopped = true;
    if (!exited) {
      // SIGINT is pingora's fast shutdown (SIGTERM would wait out the graceful-shutdown period).
      child.kill('SIGINT');
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 5000);
      await exitPromise;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
    return exited;
  }

  /** Poll admin /ready every 50 ms until it answers 200, for at most timeoutMs; throws if it exits first. */
  async function ready(readyUrl, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (exited) throw new Error(`passerelle exited before ready (${JSON.stringify(exited)}):\n${output}`);
      if ((await httpGetStatus(readyUrl)) === 200) break;
      if (Date.now() > deadline) throw new Error(`passerelle not ready after ${timeoutMs} ms at ${readyUrl}:\n${output}`);
      await pause(50); // polling for readiness
    }
  }

  return {
    child, configFile, key: childEnv.PASSERELLE_KEY, logs: () => output, exited: () => exited, stop, ready,
  };
}

/**
 * Start `passerelle run --config FILE` with the given TOML and wait until GET admin /ready answers 200.
 * @param {string} configToml
 * @param {object} [opts]
 * @param {Record<string,string>} [opts.env] extra environment (PASSERELLE_KEY is set to a fresh key unless given)
 * @param {number} [opts.readyTimeoutMs] default 20000
 * @param {string} [opts.readyPath] the admin path polled until 200: '/ready' (default), or '/health' for a start
 *   that is meant not to be ready (its Redis is down, say)
 */
export async function startPasserelle(configToml, opts = {}) {
  const { env = {}, readyTimeoutMs = 20000, readyPath = '/ready' } = opts;
  if (!binaryExists()) throw new Error(`Passerelle binary not found at ${PASSERELLE_BIN} (cargo build --release first)`);
  const publicUrl = tomlString(configToml, 'server', 'public_url');
  const adminListen = tomlString(configToml, 'server', 'admin_listen');
  if (!publicUrl || !adminListen) throw new Error('startPasserelle: the TOML needs server.public_url and server.admin_listen');

  const p = await runInBackground(configToml, { env });
  try {
    await p.ready(`http://${adminListen}${readyPath}`, readyTimeoutMs);
  } catch (e) {
    await p.stop();
    throw e;
  }
  return {
    url: publicUrl.replace(/\/$/, ''),
    adminUrl: `http://${adminListen}`,
    configFile: p.configFile,
    key: p.key,
    process: p.child,
    logs: p.logs,
    exited: p.exited,
    stop: p.stop,
  };
}

/**
 * `passerelle run --config FILE` with this TOML; waits for admin /ready on 127.0.0.1:adminPort (the TOML needs no
 * `public_url`: some scenarios test its absence); stopped (SIGINT) by t.after, which keeps the TOML and the output
 * in tests/output/<logName>.log.
 */
export async function launchPasserelle(t, toml, { adminPort, logName = outputName(t), env = {}, readyTimeoutMs = 30_000, wrapper } = {}) {
  assert.ok(adminPort, 'launchPasserelle: adminPort is required');
  const p = await runInBackground(toml, { env, wrapper });
  t.after(async () => {
    await p.stop();
    await keepOutput(logName, toml, p.logs());
  });
  const adminUrl = `http://127.0.0.1:${adminPort}`;
  await p.ready(`${adminUrl}/ready`, readyTimeoutMs);
  return { logs: p.logs, key: p.key, stop: p.stop, exited: p.exited, adminUrl };
}

/** config.example.toml (README's demo) moved to free ports: { toml, ports: { proxy, dev, echo, admin }, base }. */
export async function demoConfig() {
  const ports = { proxy: await freePort(), dev: await freePort(), echo: await freePort(), admin: await freePort() };
  const toml = (await readFile(path.join(REPO_ROOT, 'config.example.toml'), 'utf8'))
    .replaceAll('127.0.0.1:8080', `127.0.0.1:${ports.proxy}`)
    .replaceAll('127.0.0.1:8081', `127.0.0.1:${ports.dev}`)
    .replaceAll('127.0.0.1:9000', `127.0.0.1:${ports.echo}`)
    .replaceAll('127.0.0.1:9090', `127.0.0.1:${ports.admin}`);
  for (const p of ['8080', '8081', '9000', '9090']) {
    if (toml.includes(`127.0.0.1:${p}"`)) throw new Error(`demoConfig: port ${p} left in config.example.toml`);
  }
  return { toml, ports, base: `http://127.0.0.1:${ports.proxy}` };
}
