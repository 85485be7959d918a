// Run the Passerelle binary under test.
//
//   const port = await freePort(), adminPort = await freePort();
//   const p = await startPasserelle(toml);     // toml has listen/public_url/admin_listen with those ports
//   p.url       // public_url from the TOML
//   p.logs()    // everything it printed so far (stdout + stderr)
//   await p.stop();
//
// The binary is <repo>/target/release/passerelle, or $PASSERELLE_BIN.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const PASSERELLE_BIN = process.env.PASSERELLE_BIN || path.join(REPO_ROOT, 'target', 'release', 'passerelle');

export function binaryExists() {
  return existsSync(PASSERELLE_BIN);
}

/** A TCP port free on 127.0.0.1 right now (listen on 0, close, return it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A fresh session key as Passerelle expects it: base64 of 32 random bytes. */
export function sessionKey() {
  return randomBytes(32).toString('base64');
}

function httpStatus(url) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
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
 * Run a Passerelle subcommand to completion (e.g. `check`). Resolves { code, stdout, stderr }.
 */
export function runPasserelle(args, { env = {}, timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(PASSERELLE_BIN, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
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
 * Start `passerelle run --config FILE` with the given TOML and wait until GET admin /ready answers 200.
 * @param {string} configToml
 * @param {object} [opts]
 * @param {Record<string,string>} [opts.env] extra environment (PASSERELLE_KEY is set to a fresh key unless given)
 * @param {number} [opts.readyTimeoutMs] default 20000
 */
export async function startPasserelle(configToml, opts = {}) {
  const { env = {}, readyTimeoutMs = 20000 } = opts;
  if (!binaryExists()) throw new Error(`Passerelle binary not found at ${PASSERELLE_BIN} (cargo build --release first)`);
  const publicUrl = tomlString(configToml, 'server', 'public_url');
  const adminListen = tomlString(configToml, 'server', 'admin_listen');
  if (!publicUrl || !adminListen) throw new Error('startPasserelle: the TOML needs server.public_url and server.admin_listen');

  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-test-'));
  const configFile = path.join(dir, 'config.toml');
  await writeFile(configFile, configToml, { mode: 0o600 });

  const childEnv = {
    ...process.env,
    RUST_LOG: process.env.RUST_LOG || 'info',
    PASSERELLE_KEY: sessionKey(),
    ...env,
  };
  let output = '';
  const child = spawn(PASSERELLE_BIN, ['run', '--config', configFile], {
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
    cwd: dir,
  });
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      resolve(exited);
    });
  });
  child.on('error', (e) => { output += `\n[spawn error] ${e.message}\n`; });

  const cleanupDir = () => rm(dir, { recursive: true, force: true });
  async function stop() {
    if (!exited) {
      // SIGINT is pingora's fast shutdown (SIGTERM would wait out the graceful-shutdown period).
      child.kill('SIGINT');
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 5000);
      await exitPromise;
      clearTimeout(timer);
    }
    await cleanupDir();
    return exited;
  }

  // Wait for readiness: poll admin /ready every 50 ms, for at most readyTimeoutMs.
  const readyUrl = `http://${adminListen}/ready`;
  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited) {
      await cleanupDir();
      throw new Error(`passerelle exited before ready (${JSON.stringify(exited)}):\n${output}`);
    }
    if ((await httpStatus(readyUrl)) === 200) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`passerelle not ready after ${readyTimeoutMs} ms at ${readyUrl}:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }

  return {
    url: publicUrl.replace(/\/$/, ''),
    adminUrl: `http://${adminListen}`,
    configFile,
    key: childEnv.PASSERELLE_KEY,
    process: child,
    logs: () => output,
    exited: () => exited,
    stop,
  };
}
