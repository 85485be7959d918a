// Throw-away certificate authorities for the TLS tests, made with the openssl CLI in a directory removed by t.after.
//
//   const pki = await makePki(t);                        // a CA and a server certificate for 127.0.0.1
//   const pki = await makePki(t, { serverNames: ['DNS:app.internal'], client: true });
//   pki.caFile, pki.ca, pki.cert, pki.key               // PEM paths / texts
//   pki.client.certFile, pki.client.keyFile, pki.client.caFile   // with `client`: a client certificate and its CA
//   pki.otherCaFile                                      // a CA that signed nothing here: the wrong CA
//   const pki = await makePki(t, { servers: { a: ['DNS:a.test'] } });
//   pki.servers.a.certFile, .keyFile, .cert, .key       // with `servers`: more server certificates from the same CA
//   await pki.issueServer('b2', ['DNS:b.test'])          // another one, later (a renewal): { certFile, keyFile, cert, key }

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** undefined when openssl is missing. */
export async function makePki(t, { serverNames = ['IP:127.0.0.1'], client = false, servers = {} } = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), 'passerelle-pki-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const run = (args) => new Promise((resolve, reject) => {
    execFile('openssl', args, { cwd: dir }, (e, stdout, stderr) => (e ? reject(Object.assign(e, { stderr })) : resolve(stdout)));
  });
  try {
    await run(['version']);
  } catch {
    return undefined;
  }
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  const makeCa = (name, cn) => run(['req', '-x509', ...ec, '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const issue = async (name, ca, subject, ext) => {
    await writeFile(path.join(dir, `${name}.ext`), `${ext}basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n`);
    await run(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject]);
    await run(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.pem`,
      '-days', '2', '-extfile', `${name}.ext`]);
  };
  await makeCa('ca', 'Passerelle integration test CA');
  await makeCa('other-ca', 'Another CA that signed nothing here');
  await issue('server', 'ca', '/CN=Passerelle test upstream', `subjectAltName=${serverNames.join(',')}\nextendedKeyUsage=serverAuth\n`);
  const file = (name) => path.join(dir, name);
  /** A server certificate `name`.pem / `name`.key from the same CA, for these subjectAltNames. */
  const issueServer = async (name, names) => {
    await issue(name, 'ca', `/CN=Passerelle test server ${name}`, `subjectAltName=${names.join(',')}\nextendedKeyUsage=serverAuth\n`);
    return {
      certFile: file(`${name}.pem`),
      keyFile: file(`${name}.key`),
      cert: await readFile(file(`${name}.pem`), 'utf8'),
      key: await readFile(file(`${name}.key`), 'utf8'),
    };
  };
  const pki = {
    dir,
    issueServer,
    servers: {},
    caFile: file('ca.pem'),
    otherCaFile: file('other-ca.pem'),
    ca: await readFile(file('ca.pem'), 'utf8'),
    key: await readFile(file('server.key'), 'utf8'),
    cert: await readFile(file('server.pem'), 'utf8'),
  };
  for (const [name, names] of Object.entries(servers)) pki.servers[name] = await issueServer(name, names);
  if (client) {
    await makeCa('client-ca', 'Passerelle client CA');
    await issue('client', 'client-ca', '/CN=passerelle-gateway/O=Test administration', 'extendedKeyUsage=clientAuth\n');
    pki.client = {
      /** Another client certificate `name`.pem / `name`.key, from `ca` ('client-ca', or 'other-ca' for the wrong one). */
      issue: async (name, subject, { ca = 'client-ca', usage = 'clientAuth' } = {}) => {
        await issue(name, ca, subject, `extendedKeyUsage=${usage}\n`);
        return { certFile: file(`${name}.pem`), keyFile: file(`${name}.key`),
          cert: await readFile(file(`${name}.pem`), 'utf8'), key: await readFile(file(`${name}.key`), 'utf8') };
      },
      caFile: file('client-ca.pem'),
      ca: await readFile(file('client-ca.pem'), 'utf8'),
      certFile: file('client.pem'),
      keyFile: file('client.key'),
    };
  }
  return pki;
}
