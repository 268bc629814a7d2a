// Listen addresses: unix://PATH, tcp://HOST:PORT, vsock://CID:PORT.

export type ListenAddress =
  | { readonly kind: 'unix'; readonly path: string; readonly text: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number; readonly text: string }
  | { readonly kind: 'vsock'; readonly cid: number; readonly port: number; readonly text: string };

const port = (s: string, text: string): number => {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n > 65535) throw new Error(`bad port in ${JSON.stringify(text)}`);
  return n;
};

export function parseAddress(text: string): ListenAddress {
  const m = /^([a-z]+):\/\/(.*)$/.exec(text);
  if (!m) throw new Error(`bad address ${JSON.stringify(text)}: expected unix://PATH, tcp://HOST:PORT or vsock://CID:PORT`);
  const [, scheme, rest = ''] = m;
  switch (scheme) {
    case 'unix':
      if (!rest.startsWith('/')) throw new Error(`bad address ${JSON.stringify(text)}: unix path must be absolute`);
      return { kind: 'unix', path: rest, text };
    case 'tcp': {
      const hp = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(rest);
      if (!hp) throw new Error(`bad address ${JSON.stringify(text)}: expected tcp://HOST:PORT`);
      return { kind: 'tcp', host: hp[1]!.replace(/^\[|\]$/g, ''), port: port(hp[2]!, text), text };
    }
    case 'vsock': {
      // kata writes the "any" CID as -1 (VMADDR_CID_ANY).
      const cp = /^(-1|\d+):(\d+)$/.exec(rest);
      if (!cp) throw new Error(`bad address ${JSON.stringify(text)}: expected vsock://CID:PORT`);
      const cid = cp[1] === '-1' ? 0xffffffff : Number(cp[1]);
      return { kind: 'vsock', cid, port: port(cp[2]!, text), text };
    }
    default:
      throw new Error(`bad address ${JSON.stringify(text)}: unknown scheme ${scheme}`);
  }
}
