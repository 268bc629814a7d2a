// The guest image end to end: one boot under QEMU (TCG here), the agent
// driven from the host over both transports through hostfwd, host services
// reached through guestfwd, and the guest inspected through its debug console.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, truncateSync, writeFileSync, openSync, closeSync, readSync, writeSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '../../agent/src/errors.ts';
import { loadProtos } from '../../agent/src/server/protos.ts';
import { encodeFrame, FrameReader, FrameType } from '../../agent/src/server/ttrpc/frame.ts';
import { grpcCall, grpcClient } from '../../scripts/lib/agent-process.ts';
import { buildImage, sampleLayers } from '../fixtures/images.ts';
import { runCli } from '../helpers/cli.ts';
import { startKbs, type TestKbs } from '../helpers/kbs.ts';
import { startRegistry, type TestRegistry } from '../helpers/registry.ts';
import { bootVm, ensureImage, startGuestAgent, vmSkipReason, GUESTFWD_ADDR, type Manifest, type Vm } from './helpers.ts';

const skip = vmSkipReason();
if (skip) process.stdout.write(`SKIP: VM suite: qemu is unusable here: ${skip}\n`);

describe('guest VM', { skip: skip ? `qemu is unusable here: ${skip}` : false, timeout: 14 * 60_000 }, () => {
  let manifest: Manifest;
  let vm: Vm;
  let dir: string;
  let http: Server;
  let httpPort: number;
  const served = `served to the guest through guestfwd ${Date.now()}\n`;
  const initdataToml = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"cdh.toml" = \'\'\'\n[kbc]\nname = "offline_fs_kbc"\n\'\'\'\n';
  const marker = `tee-vm-reboot-marker-${process.pid}`;
  // The host's registry and dev KBS, which the guest reaches only through guestfwd.
  let registry: TestRegistry;
  let kbs: TestKbs;
  const REGISTRY_PORT = 5000;
  const KBS_PORT = 8081;
  // A second agent in the guest for the pull, configured for the test registry (plain HTTP) and the dev KBS.
  const PULL_AGENT_PORT = 50010;
  const kid = 'kbs:///default/image-kek/vm';

  before(async () => {
    manifest = ensureImage();
    dir = mkdtempSync(join(tmpdir(), 'tee-vm-test-'));
    // A host service the guest reaches only through guestfwd (as it will the registry and KBS).
    http = createServer((_req, res) => res.end(served));
    httpPort = await new Promise<number>((res) => http.listen(0, '127.0.0.1', () => res((http.address() as { port: number }).port)));
    writeFileSync(join(dir, 'initdata.toml'), initdataToml);
    // A multi-layer image (gzip, zstd and uncompressed layers), plain and encrypted (CoCo key packet,
    // AES_256_GCM_STREAM) with its KEK in the dev KBS.
    registry = await startRegistry();
    const layout = join(dir, 'layout');
    buildImage(layout, 'plain', sampleLayers(join(dir, 'src')));
    const kek = createHash('sha256').update(`vm-kek-${process.pid}`).digest();
    writeFileSync(join(dir, 'kek'), kek, { mode: 0o600 });
    const enc = await runCli(['encrypt', '--input', `oci:${layout}:plain`, '--output', `oci:${layout}:enc`, '--recipient', `kbs:${kid.slice(4)}`, '--kek', join(dir, 'kek'), '--cipher', 'gcm-stream']);
    assert.equal(enc.code, 0, enc.stderr);
    await registry.push(`oci:${layout}:plain`, 'tee/plain:v1');
    await registry.push(`oci:${layout}:enc`, 'tee/enc:v1');
    kbs = await startKbs({ resources: { [kid.slice('kbs:///'.length)]: kek } });
    for (const name of ['scratch.img', 'volume.img']) {
      writeFileSync(join(dir, name), '');
      truncateSync(join(dir, name), 64 << 20);
    }
    vm = await bootVm({
      debugConsole: true,
      initdata: join(dir, 'initdata.toml'),
      disks: [
        { path: join(dir, 'scratch.img'), serial: 'scratch' },
        { path: join(dir, 'volume.img'), serial: 'volume' },
      ],
      guestfwd: [
        { guest: 8080, host: httpPort },
        { guest: REGISTRY_PORT, host: Number(registry.host.split(':')[1]) },
        { guest: KBS_PORT, host: kbs.port },
      ],
      hostfwd: [{ host: 0, guest: PULL_AGENT_PORT }],
      workDir: join(dir, 'vm'),
    });
    process.stdout.write(`# guest booted (${vm.accel}) in ${vm.readyMs} ms\n`);
  });

  after(async () => {
    await vm?.kill();
    http?.close();
    await registry?.stop();
    await kbs?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** /dev/vdX of the virtio disk with this serial. */
  const diskBySerial = async (serial: string): Promise<string> => {
    const out = await vm.run(`for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = ${serial} ] && echo /dev/\${d##*/}; done; true`);
    const dev = out.trim();
    assert.match(dev, /^\/dev\/vd[a-z]$/, `no disk with serial ${serial}`);
    return dev;
  };

  test('the debug shell: exit code, stdout and stderr apart, binary files both ways', async () => {
    const r = await vm.exec('echo out; echo err >&2; exit 3');
    assert.deepEqual({ code: r.code, stdout: r.stdout, stderr: r.stderr }, { code: 3, stdout: 'out\n', stderr: 'err\n' });
    const bytes = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 7) & 0xff));
    await vm.writeFile('/run/vm-test.bin', bytes, 0o600);
    assert.ok((await vm.readFile('/run/vm-test.bin')).equals(bytes));
    assert.equal((await vm.run('stat -c %a /run/vm-test.bin')).trim(), '600');
    // The guest's own timeout ends a hung command.
    assert.equal((await vm.exec('sleep 30', { timeoutMs: 1000 })).code, 143);
  });

  test('Health over ttrpc through the forwarded port', async () => {
    const c = await vm.ttrpc();
    assert.deepEqual(await c.call('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
    const v = await c.call<{ agent_version: string; grpc_version: string }>('grpc.Health', 'Version', { service: '' });
    assert.equal(v.agent_version, manifest.agent.version);
  });

  test('Health over gRPC through the forwarded port', async () => {
    assert.deepEqual(await vm.grpcCall('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
    const v = await vm.grpcCall<{ agent_version: string }>('grpc.Health', 'Version', { service: '' });
    assert.equal(v.agent_version, manifest.agent.version);
  });

  test('GetTeeType', async () => {
    const c = await vm.ttrpc();
    const res = await c.call<{ tee: string }>('attestation_agent.AttestationAgentService', 'GetTeeType', {});
    assert.equal(res.tee, vm.accel === 'tdx' ? 'tdx' : 'sample');
  });

  test('the guest reaches host services only through guestfwd', async () => {
    assert.equal(await vm.run(`wget -q -O - http://${GUESTFWD_ADDR}:8080/`), served);
    // restrict=on: the slirp gateway (10.0.2.2, the host's loopback without it) is not reachable.
    const direct = await vm.exec(`wget -q -T 5 -O - http://10.0.2.2:${httpPort}/`, { timeoutMs: 20_000 });
    assert.notEqual(direct.code, 0);
  });

  test('pull a plain and an encrypted multi-layer image from the host registry; the KEK from the dev KBS after sample attestation', async () => {
    // The agent init started is configured for kata's sockets; this one, started the same way from the same
    // bundle, adds what only this test needs: the plain-HTTP test registry and the dev KBS behind guestfwd.
    const agent = await startGuestAgent(vm, 'pull-agent', {
      listen: { grpc: [`tcp://0.0.0.0:${PULL_AGENT_PORT}`], ttrpc: [] },
      kbc: { name: 'cc_kbc', url: `http://${GUESTFWD_ADDR}:${KBS_PORT}` },
      attestation: { eventlog_path: '/run/pull-agent/eventlog' },
      image: { bundle_base: '/run/pull-agent/containers' },
      registry: { insecure: [`${GUESTFWD_ADDR}:${REGISTRY_PORT}`] },
    });
    const port = vm.hostfwd.find((f) => f.guest === PULL_AGENT_PORT)!.host;
    const client = grpcClient('grpc.Image', `127.0.0.1:${port}`);
    try {
      for (const name of ['plain', 'enc']) {
        const res = await grpcCall<{ image_ref: string }>(client, 'PullImage', { image: `${GUESTFWD_ADDR}:${REGISTRY_PORT}/tee/${name}:v1`, container_id: `vm-${name}`, source_creds: '' }, 300_000);
        assert.equal(res.image_ref, `${GUESTFWD_ADDR}:${REGISTRY_PORT}/tee/${name}:v1`);
      }
    } finally {
      client.close();
    }
    assert.equal(kbs.stats.attest, 1, 'the guest attested once to the dev KBS');
    // init unpacked the initdata disk; the agent sent it with its evidence, byte for byte.
    assert.deepEqual(kbs.stats.initData, [createHash('sha384').update(initdataToml).digest('hex')]);
    assert.ok(kbs.stats.resource >= 3, 'and fetched the KEK for the encrypted layers');
    // The bundles in the guest: the encrypted image unpacked to exactly the plain one, and to the files the image holds.
    const listing = (name: string) => vm.run(`cd /run/pull-agent/containers/vm-${name}/rootfs && find . -type f -exec sha256sum {} + | sort -k2`);
    const plain = await listing('plain');
    assert.equal(await listing('enc'), plain);
    const profile = createHash('sha256').update('export X=1\n').digest('hex');
    assert.match(plain, new RegExp(`^${profile}  ./home/user/.profile$`, 'm'));
    assert.match(await vm.run('grep " /run/pull-agent/containers/vm-enc/rootfs " /proc/mounts'), /^overlay /, 'the bundle is an overlay of the layer directories');
    await agent.stop();
  });

  test('the image carries the agent bundle, its runtime and the pause bundle', async () => {
    // The manifest's digest covers every module of the bundle, concatenated in name order.
    const modules = (await vm.run('cd /opt/tee-agent && ls *.mjs')).split(/\s+/).filter(Boolean).sort();
    assert.ok(modules.includes('tee-agent.mjs') && modules.some((m) => m.startsWith('pull-')), modules.join(' '));
    const code = createHash('sha384');
    for (const m of modules) code.update(await vm.readFile(`/opt/tee-agent/${m}`));
    assert.equal(code.digest('hex'), manifest.agent.bundle_sha384);
    assert.equal((await vm.run('node --version')).trim(), `v${manifest.node.version}`);
    assert.equal((await vm.run('ls /opt/tee-agent/protos')).split('\n').filter((f) => f.endsWith('.proto')).length > 0, true);
    assert.equal(await vm.run('ls /opt/tee-agent/node_modules 2>/dev/null; true'), '');
    // The agent is the one the init started, with the baked config.
    const pid = (await vm.run('cat /run/tee-agent.pid')).trim();
    assert.match(await vm.run(`tr '\\0' ' ' < /proc/${pid}/cmdline`), /tee-agent\.mjs serve --config \/etc\/tee-agent\/config\.toml/);
    // With the environment and flags the bundle recipe wrote (scripts/bundle.ts).
    assert.match(await vm.run(`tr '\\0' '\\n' < /proc/${pid}/environ`), /^MALLOC_ARENA_MAX=1$/m);
    assert.match(await vm.run(`tr '\\0' ' ' < /proc/${pid}/cmdline`), /--max-semi-space-size=1 /);
    // One-shot commands go through the same launcher.
    assert.match(await vm.run('tee-agent pull --help'), /^Usage: tee-agent pull /);
    // Modules the agent needs are loaded.
    const mods = await vm.run('cut -d" " -f1 /proc/modules');
    for (const m of ['dm_crypt', 'dm_integrity', 'dm_verity', 'virtio_blk', 'virtio_net', 'vsock', 'overlay', 'authenc', 'xts']) assert.match(mods, new RegExp(`^${m}$`, 'm'), m);
    assert.match(await vm.run('cat /proc/mounts'), /^configfs \/sys\/kernel\/config configfs/m);
    // The image store's tmpfs gives big files huge pages.
    assert.match(await vm.run('cat /proc/mounts'), /^run \/run tmpfs \S*huge=within_size/m);
    // Pause bundle: kata's layout, a static pause that exits 0 on SIGTERM.
    const config = JSON.parse((await vm.readFile('/pause_bundle/config.json')).toString()) as { process: { args: string[] }; root: { path: string } };
    assert.deepEqual(config.process.args, ['/pause']);
    assert.equal(config.root.path, 'rootfs');
    assert.equal((await vm.run('/pause_bundle/rootfs/pause & p=$!; sleep 1; kill -TERM $p; wait $p; echo $?')).trim(), '0');
  });

  test('the agent serves ttrpc on AF_VSOCK through its socat bridge (guest-local vsock loopback)', async () => {
    // This host has no vhost-vsock, so the host cannot dial the guest's vsock
    // port; vsock_loopback lets a guest-local client reach CID 1 instead.
    const port = 1025;
    const agent = await startGuestAgent(vm, 'vsock-agent', {}, `--grpc none --ttrpc vsock://-1:${port}`);
    try {
      const { definition, envelope } = loadProtos();
      const check = definition['grpc.Health'] as Record<string, { requestSerialize(r: object): Buffer; responseDeserialize(b: Buffer): unknown }>;
      const request = envelope.Request.encode({ service: 'grpc.Health', method: 'Check', payload: check.Check!.requestSerialize({ service: '' }) }).finish();
      const out = await vm.exec(`socat -t 10 - VSOCK-CONNECT:1:${port}`, { stdin: encodeFrame(1, FrameType.Request, request), timeoutMs: 30_000 });
      assert.equal(out.code, 0, out.stderr);
      const frames = [...new FrameReader().push(out.stdoutBytes)];
      assert.equal(frames.length, 1);
      const frame = frames[0]!;
      assert.ok(frame.kind === 'frame' && frame.header.type === FrameType.Response && frame.header.streamId === 1);
      const res = envelope.Response.decode(frame.data) as unknown as { status?: { code: number }; payload: Uint8Array };
      assert.equal(res.status?.code ?? 0, Code.OK);
      assert.deepEqual(check.Check!.responseDeserialize(Buffer.from(res.payload)), { status: 'SERVING' });
    } finally {
      await agent.stop();
    }
  });

  test('initdata arrives as a kata-format block device, and init unpacks it where the agent reads it', async () => {
    const dev = await diskBySerial('initdata');
    const raw = await vm.readFile(dev);
    assert.equal(raw.subarray(0, 8).toString('ascii'), 'initdata');
    const len = Number(raw.readBigUInt64LE(8));
    const { gunzipSync } = await import('node:zlib');
    assert.equal(gunzipSync(raw.subarray(16, 16 + len)).toString(), initdataToml);
    assert.equal((await vm.readFile('/run/confidential-containers/initdata/initdata.toml')).toString(), initdataToml);
    assert.match(vm.console(), /"msg":"initdata"/, 'the agent loaded and bound it at start');
  });

  test('cryptsetup works in the guest: LUKS2 with dm-integrity on a virtio-blk disk', async () => {
    const dev = await diskBySerial('scratch');
    const key = '/run/vm-test.key';
    await vm.run(`head -c 64 /dev/urandom > ${key}`);
    await vm.run(
      `cryptsetup luksFormat --batch-mode --type luks2 --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 --integrity hmac-sha256 --integrity-no-wipe --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file ${key} ${dev}`,
      { timeoutMs: 300_000 },
    );
    await vm.run(`cryptsetup open --type luks2 --key-file ${key} ${dev} vmtest`);
    const status = await vm.run('cryptsetup status vmtest');
    assert.match(status, /cipher:\s+aes-xts-plain64/);
    assert.match(status, /integrity:\s+hmac\(sha256\)/);
    assert.match(status, /sector size:\s+4096/);
    const dump = JSON.parse(await vm.run(`cryptsetup luksDump --dump-json-metadata ${dev}`)) as { segments: Record<string, { encryption: string; integrity?: { type: string } }> };
    assert.equal(dump.segments['0']?.integrity?.type, 'hmac(sha256)');
    const data = createHash('sha256').update(marker).digest('hex').repeat(64);
    await vm.run(`dd of=/dev/mapper/vmtest bs=4096 conv=fsync`, { stdin: data });
    assert.equal((await vm.run(`dd if=/dev/mapper/vmtest bs=4096 count=1 2>/dev/null`)).slice(0, data.length), data);
    await vm.run(`cryptsetup close vmtest && rm ${key}`);
  });

  test('SecureMount of an encrypted ephemeral volume on a virtio-blk disk, then SecureUnmount', async () => {
    const dev = await diskBySerial('volume');
    const majMin = (await vm.run(`cat /sys/block/${dev.slice(5)}/dev`)).trim();
    const mountPoint = '/run/kata-containers/sandbox/storage/vm-test';
    await vm.run(`mkdir -p ${mountPoint}`);
    const c = await vm.ttrpc();
    const options = {
      deviceId: majMin,
      sourceType: 'empty',
      targetType: 'fileSystem',
      filesystemType: 'ext4',
      mkfsOpts: '-O ^has_journal -m 0 -i 163840 -I 128',
      encryptionType: 'luks2',
      dataIntegrity: 'true',
    };
    await c.call('api.SecureMountService', 'SecureMount', { volume_type: 'block-device', options, flags: [], mount_point: mountPoint }, { timeoutMs: 300_000 });
    const mounts = await vm.run('cat /proc/mounts');
    const line = mounts.split('\n').find((l) => l.split(' ')[1] === mountPoint);
    assert.ok(line, `${mountPoint} is not mounted`);
    const mapper = line.split(' ')[0]!.replace('/dev/mapper/', '');
    // Detached header: cryptsetup 2.6 prints no integrity line for it; the dm tables tell.
    assert.match(await vm.run(`cryptsetup status ${mapper}`), /keysize: 768 bits/);
    assert.match(await vm.run(`dmsetup table ${mapper}`), /crypt capi:authenc\(hmac\(sha256\),xts\(aes\)\)-plain64 .* integrity:32:aead/);
    await vm.run(`echo ${marker} > ${mountPoint}/f && sync && cat ${mountPoint}/f`);
    // Teardown: umount, cryptsetup close, header gone.
    assert.deepEqual(await c.call('teeagent.SecureStorageService', 'SecureUnmount', { mount_point: mountPoint }, { timeoutMs: 120_000 }), { unmounted: true });
    assert.doesNotMatch(await vm.run('cat /proc/mounts'), new RegExp(` ${mountPoint} `));
    assert.doesNotMatch(await vm.run('ls /dev/mapper'), new RegExp(mapper));
  });

  test('reboot keeps the disks', async () => {
    const dev = await diskBySerial('scratch');
    await vm.run(`echo ${marker} | dd of=${dev} bs=512 seek=1 conv=fsync 2>/dev/null`);
    vm = await vm.reboot();
    const again = await diskBySerial('scratch');
    assert.equal((await vm.run(`dd if=${again} bs=512 skip=1 count=1 2>/dev/null | head -n1`)).trim(), marker);
    assert.deepEqual(await vm.grpcCall('grpc.Health', 'Check', { service: '' }), { status: 'SERVING' });
  });

  test('the host sees what the guest wrote to a disk', () => {
    const fd = openSync(join(dir, 'scratch.img'), 'r+');
    try {
      const buf = Buffer.alloc(marker.length);
      readSync(fd, buf, 0, buf.length, 512);
      assert.equal(buf.toString(), marker);
      writeSync(fd, Buffer.alloc(marker.length), 0, marker.length, 512);
    } finally {
      closeSync(fd);
    }
  });

  test('teardown: the agent stops on the power button and the guest powers off cleanly', async () => {
    const r = await vm.shutdown();
    assert.deepEqual(r, { clean: true, code: 0 });
    assert.match(vm.console(), /"msg":"stopped"/);
    assert.match(vm.console(), /tee-init: agent exited with 0/);
  });
});
