// A real nginx in front of an app, with Passerelle as its forward-auth service: the set-up of
// deploy/nginx/auth_request.conf, trimmed to plain http on 127.0.0.1 (no TLS, no port-80 redirect server).
//
//   const ngx = await startNginx({ passerellePort, appPort });   // resolves once nginx accepts connections
//   ngx.port, ngx.url       // 127.0.0.1:<free port>
//   ngx.conf                // the nginx.conf it runs with
//   ngx.logs()              // what nginx printed (error log on stderr)
//   await ngx.stop();       // SIGTERM (fast shutdown), SIGKILL after 5 s; removes its temporary prefix
//
// As in the example: /.passerelle/ is proxied to Passerelle; every other URL first goes through an
// `auth_request` subrequest to Passerelle's /.passerelle/auth with `X-Original-URI $request_uri`; the identity
// headers of its answer are set on the proxied request (and replace whatever the client sent), the app's
// cookies come from `X-Passerelle-App-Cookie` (`proxy_set_header Cookie $app_cookie`), a 401 becomes a login
// redirect for navigations and a bare 401 otherwise, any other refusal a 500.
//
// nginx runs in the foreground (`daemon off`) with a temporary prefix holding its configuration, pid file and
// temporary directories; when the tests run as root its workers stay root (`user root;`) so that they can use
// that private directory. NGINX_BIN overrides /usr/sbin/nginx (nginx-light has the auth_request module).

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { pause } from './http.mjs';
import { freePort } from './passerelle.mjs';
import { PREFIX } from './stack.mjs';

export const NGINX_BIN = process.env.NGINX_BIN || '/usr/sbin/nginx';

/** The identity headers the example sets from the subrequest's answer. */
export const NGINX_IDENTITY_HEADERS = ['X-Auth-Sub', 'X-Auth-Email', 'X-Auth-Given-Name', 'X-Auth-Family-Name', 'X-Auth-Siret'];

export function nginxAvailable() {
  return existsSync(NGINX_BIN);
}

const variable = (header) => header.toLowerCase().replace(/-/g, '_');

/** The nginx.conf: deploy/nginx/auth_request.conf's `http { }` content, on 127.0.0.1:port, over http. */
export function nginxConf({ dir, port, passerellePort, appPort, identityHeaders = NGINX_IDENTITY_HEADERS }) {
  const runAsRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const ids = identityHeaders.map((h) => [h, variable(h).replace(/^x_/, '')]); // X-Auth-Sub -> auth_sub
  return `# written by tests/support/nginx.mjs, after deploy/nginx/auth_request.conf (http only)
${runAsRoot ? 'user root;\n' : ''}worker_processes 1;
events { worker_connections 512; }

http {
    access_log ${path.join(dir, 'access.log')};
    client_body_temp_path ${path.join(dir, 'client_body')};
    proxy_temp_path ${path.join(dir, 'proxy')};
    fastcgi_temp_path ${path.join(dir, 'fastcgi')};
    uwsgi_temp_path ${path.join(dir, 'uwsgi')};
    scgi_temp_path ${path.join(dir, 'scgi')};

    upstream passerelle {
        server 127.0.0.1:${checkedPort(passerellePort)};
        keepalive 16;
    }

    upstream demarche_app {
        server 127.0.0.1:${appPort};
        keepalive 32;
    }

    map "$request_method|$http_x_requested_with|$http_accept" $passerelle_login_redirect {
        default                         0;
        "~*^(GET|HEAD)\\|\\|.*text/html"  1;
    }

    server {
        listen 127.0.0.1:${port} default_server;
        server_name demarche.example.gouv.fr;

        underscores_in_headers off;

        # ---- Passerelle's own endpoints: login, callback, logout, logged-out, userinfo ----
        location ${PREFIX}/ {
            proxy_pass http://passerelle;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host              $host;
            proxy_set_header X-Forwarded-Host  $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;
        }

        # ---- the forward-auth subrequest (internal: clients cannot call this location) ----
        location = ${PREFIX}-auth-subrequest {
            internal;
            proxy_pass http://passerelle${PREFIX}/auth;
            proxy_set_header X-Original-URI    $request_uri;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host              $host;
            proxy_set_header X-Forwarded-Host  $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;
        }

        # ---- where to send someone who is not signed in ----
        location @login {
            if ($passerelle_login_redirect = 0) {
                return 401;
            }
            return 302 ${PREFIX}/login?rd=$request_uri;
        }

        # ---- the application ----
        location / {
            auth_request ${PREFIX}-auth-subrequest;
${ids.map(([, v]) => `            auth_request_set $${v} $upstream_http_x_${v};`).join('\n')}
            error_page 401 = @login;
            auth_request_set $app_cookie       $upstream_http_x_passerelle_app_cookie;
            auth_request_set $auth_set_cookie  $upstream_http_set_cookie;
            add_header Set-Cookie $auth_set_cookie;

            proxy_pass http://demarche_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host              $host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;
            proxy_set_header Cookie            $app_cookie;
${ids.map(([h, v]) => `            proxy_set_header ${h} $${v};`).join('\n')}
            proxy_set_header Remote-User        "";
            proxy_set_header X-Remote-User      "";
            proxy_set_header X-Forwarded-User   "";
            proxy_set_header X-Forwarded-Email  "";
        }
    }
}
`;
}

function checkedPort(port) {
  if (!Number.isInteger(port) || port <= 0) throw new TypeError(`startNginx: passerellePort must be a port, got ${port}`);
  return port;
}

/** Connects to 127.0.0.1:port once: true when something accepts. */
function accepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => { socket.destroy(); resolve(false); });
  });
}

/**
 * Starts nginx with nginxConf(...) on a free port of 127.0.0.1 and resolves once it accepts connections (it throws
 * with nginx's output if nginx exits first or is not listening within `readyTimeoutMs`).
 */
export async function startNginx({ passerellePort, appPort, identityHeaders, readyTimeoutMs = 15_000 }) {
  if (!nginxAvailable()) throw new Error(`nginx not found at ${NGINX_BIN}`);
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-nginx-'));
  const port = await freePort();
  const conf = nginxConf({ dir, port, passerellePort, appPort, identityHeaders });
  const confFile = path.join(dir, 'nginx.conf');
  await writeFile(confFile, conf);
  const child = spawn(NGINX_BIN, ['-p', dir, '-c', confFile, '-g', `daemon off; pid ${path.join(dir, 'nginx.pid')}; error_log stderr;`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let exited = null;
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const exit = new Promise((resolve) => {
    child.on('error', (e) => { output += `\n[spawn error] ${e.message}\n`; exited = { error: e.message }; resolve(exited); });
    child.on('close', (code, signal) => { exited = { code, signal }; resolve(exited); });
  });

  let stopped = false;
  async function stop() {
    if (stopped) return exited;
    stopped = true;
    if (!exited) {
      child.kill('SIGTERM'); // fast shutdown (SIGQUIT would wait for the connections to finish)
      const timer = setTimeout(() => { if (!exited) child.kill('SIGKILL'); }, 5000);
      await exit;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
    return exited;
  }

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`nginx exited before listening (${JSON.stringify(exited)}):\n${output}\n----- nginx.conf -----\n${conf}`);
    }
    if (await accepts(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`nginx not listening on 127.0.0.1:${port} after ${readyTimeoutMs} ms:\n${output}`);
    }
    await pause(20); // polling for readiness
  }
  return { port, url: `http://127.0.0.1:${port}`, conf, logs: () => output, stop };
}
