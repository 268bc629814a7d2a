// Throwaway X.509 for tests, made with the openssl CLI: a CA, and leaf
// certificates it signs (server certs with IP/DNS SANs, or signing certs for
// JWT x5c chains). Everything lives in the caller's temp directory.

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CertFiles {
  readonly certFile: string;
  readonly keyFile: string;
  readonly certPem: string;
  readonly keyPem: string;
}

const openssl = (args: string[]): void => {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
};

/** An EC P-256 key in PKCS#8 PEM, which jose's importPKCS8 reads. */
const genKey = (file: string): void => openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]);

function files(dir: string, name: string): CertFiles {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  return { certFile, keyFile, certPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8') };
}

/** A self-signed CA with an EC P-256 key. */
export function makeCa(dir: string, name = 'test-ca'): CertFiles {
  genKey(join(dir, `${name}.key`));
  openssl([
    'req', '-x509', '-new', '-key', join(dir, `${name}.key`), '-out', join(dir, `${name}.crt`), '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return files(dir, name);
}

/** A leaf certificate signed by `ca`; `sans` like ["IP:127.0.0.1", "DNS:localhost"]. */
export function issueCert(dir: string, ca: CertFiles, name: string, opts: { sans?: string[]; usage?: 'server' | 'signing' } = {}): CertFiles {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  genKey(key);
  openssl(['req', '-new', '-key', key, '-out', csr, '-subj', `/CN=${name}`]);
  const lines = ['basicConstraints=CA:FALSE'];
  if (opts.usage === 'signing') lines.push('keyUsage=critical,digitalSignature');
  else lines.push('keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth');
  if (opts.sans?.length) lines.push(`subjectAltName=${opts.sans.join(',')}`);
  writeFileSync(ext, lines.join('\n') + '\n');
  openssl(['x509', '-req', '-in', csr, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial', '-out', join(dir, `${name}.crt`), '-days', '2', '-extfile', ext]);
  return files(dir, name);
}

/** Base64 DER of a PEM certificate, as JWS x5c wants it. */
export function pemToDerBase64(pem: string): string {
  return pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
}
