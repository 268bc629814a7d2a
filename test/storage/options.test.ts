import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Code, InvalidArgument } from '../../agent/src/errors.ts';
import { KATA_EMPTYDIR_OPTIONS } from '../fixtures/kata.ts';
import { parseMkfsOptions, parseSecureMount, type SecureMountRequest } from '../../agent/src/storage/options.ts';

const req = (options: Record<string, string>, extra: Partial<SecureMountRequest> = {}): SecureMountRequest => ({
  volume_type: 'block-device',
  options,
  flags: [],
  mount_point: '/run/kata-containers/sandbox/storage/vol',
  ...extra,
});

const invalid = (r: SecureMountRequest, pattern: RegExp): void => {
  assert.throws(
    () => parseSecureMount(r, true),
    (err: unknown) => err instanceof InvalidArgument && err.code === Code.INVALID_ARGUMENT && pattern.test(err.message),
    JSON.stringify(r),
  );
};

test('the exact options kata-agent sends for an encrypted emptyDir', () => {
  const spec = parseSecureMount(
    req({ deviceId: '254:16', ...KATA_EMPTYDIR_OPTIONS, dataIntegrity: 'true' }),
    false,
  );
  assert.deepEqual(spec, {
    device: { kind: 'id', major: 254, minor: 16 },
    source: 'empty',
    key: { kind: 'ephemeral' },
    integrity: true,
    target: 'fileSystem',
    filesystem: 'ext4',
    mkfsOptions: ['-O', '^has_journal', '-m', '0', '-i', '163840', '-I', '128'],
    mapperName: undefined,
    mountPoint: '/run/kata-containers/sandbox/storage/vol',
  });
});

test('defaults: integrity from config, ext4 fileSystem, format without a key, open with one', () => {
  const a = parseSecureMount(req({ devicePath: '/dev/vdb', encryptionType: 'luks2' }), true);
  assert.equal(a.integrity, true);
  assert.equal(a.target, 'fileSystem');
  assert.equal(a.source, 'empty');
  assert.equal(parseSecureMount(req({ devicePath: '/dev/vdb', encryptionType: 'luks2' }), false).integrity, false);
  const b = parseSecureMount(req({ devicePath: '/dev/vdb', encryptionType: 'luks2', key: 'kbs:///default/luks/vol1' }), true);
  assert.equal(b.source, 'encrypted');
  assert.deepEqual(b.key, { kind: 'resource', uri: { plugin: 'resource', repository: 'default', type: 'luks', tag: 'vol1', query: '', text: 'kbs:///default/luks/vol1' } });
});

test('deviceId wins over devicePath, as upstream; lvmVolume names VG/LV', () => {
  assert.deepEqual(parseSecureMount(req({ deviceId: '8:0', devicePath: '/dev/vdb', encryptionType: 'luks2' }), true).device, { kind: 'id', major: 8, minor: 0 });
  assert.deepEqual(parseSecureMount(req({ lvmVolume: 'vg0/data', encryptionType: 'luks2' }), true).device, { kind: 'lvm', vg: 'vg0', lv: 'data' });
});

test('key references: kbs, sealed, file', () => {
  const key = (k: string) => parseSecureMount(req({ devicePath: '/dev/vdb', encryptionType: 'luks2', key: k }), true).key;
  assert.equal(key('kbs:///a/b/c').kind, 'resource');
  assert.deepEqual(key('sealed.eyJ.eyJ.sig'), { kind: 'sealed', secret: 'sealed.eyJ.eyJ.sig' });
  assert.deepEqual(key('file:///run/keys/k1'), { kind: 'file', path: '/run/keys/k1' });
});

test('legacy v0.13 requests: BlockDevice, encryptType LUKS, encryptKey', () => {
  const fresh = parseSecureMount(req({ deviceId: '254:16', encryptType: 'LUKS', dataIntegrity: 'false' }, { volume_type: 'BlockDevice' }), true);
  assert.equal(fresh.source, 'empty');
  assert.equal(fresh.key.kind, 'ephemeral');
  assert.equal(fresh.integrity, false);
  const keyed = parseSecureMount(req({ deviceId: '254:16', encryptType: 'LUKS', encryptKey: 'kbs:///default/luks/k' }, { volume_type: 'BlockDevice' }), true);
  assert.equal(keyed.source, 'encrypted');
  assert.equal(keyed.key.kind, 'resource');
});

test('unknown keys and bad values are INVALID_ARGUMENT', () => {
  const base = { devicePath: '/dev/vdb', encryptionType: 'luks2' };
  invalid(req({ ...base, targetPath: '/x' }), /option "targetPath" is not known/);
  invalid(req({ ...base, encryptKey: 'kbs:///a/b/c' }), /option "encryptKey" is not known for volume_type "block-device"/);
  invalid(req({ deviceId: '1:2', encryptType: 'LUKS', sourceType: 'empty' }, { volume_type: 'BlockDevice' }), /"sourceType" is not known for volume_type "BlockDevice"/);
  invalid(req({ ...base }, { volume_type: 'zfs-pool' }), /volume_type "zfs-pool" is not supported/);
  invalid(req({ deviceId: '254', encryptionType: 'luks2' }), /deviceId="254": expected MAJOR:MINOR/);
  invalid(req({ deviceId: '254:1:2', encryptionType: 'luks2' }), /deviceId/);
  invalid(req({ devicePath: 'dev/vdb', encryptionType: 'luks2' }), /devicePath/);
  invalid(req({ devicePath: '/dev/../etc/passwd', encryptionType: 'luks2' }), /devicePath/);
  invalid(req({ encryptionType: 'luks2' }), /needs deviceId, devicePath or lvmVolume/);
  invalid(req({ devicePath: '/dev/vdb' }), /encryptionType is required/);
  invalid(req({ ...base, encryptionType: 'luks1' }), /encryptionType="luks1"/);
  invalid(req({ ...base, encryptionType: 'zfs' }), /"zfs" is not supported/);
  invalid(req({ ...base, sourceType: 'persistent' }), /sourceType="persistent"/);
  invalid(req({ ...base, sourceType: 'encrypted' }), /needs a key/);
  invalid(req({ ...base, key: 'http://kbs/a/b/c' }), /key="http:\/\/kbs\/a\/b\/c"/);
  invalid(req({ ...base, key: 'kbs:///a/b' }), /kbs:\/\/\/<repository>/);
  invalid(req({ ...base, key: 'file://relative/k' }), /key=/);
  invalid(req({ ...base, dataIntegrity: 'yes' }), /dataIntegrity="yes": expected "true" or "false"/);
  invalid(req({ ...base, targetType: 'filesystem' }), /targetType/);
  invalid(req({ ...base, filesystemType: 'xfs' }), /filesystemType="xfs"/);
  invalid(req({ ...base, mapperName: '../x' }), /mapperName/);
  invalid(req({ ...base, mapperName: 'control' }), /mapperName/);
  invalid(req({ lvmVolume: 'vg/lv/x', encryptionType: 'luks2' }), /lvmVolume="vg\/lv\/x": expected VG\/LV/);
  invalid(req({ lvmVolume: '-vg/lv', encryptionType: 'luks2' }), /lvmVolume/);
  invalid(req(base, { mount_point: '' }), /mount_point/);
  invalid(req(base, { mount_point: 'relative' }), /mount_point/);
  invalid(req(base, { mount_point: '/' }), /mount_point/);
  invalid(req(base, { mount_point: '/a/../b' }), /mount_point/);
});

test('mkfsOpts: upstream options pass, anything reading guest files or unknown is refused', () => {
  assert.deepEqual(parseMkfsOptions('-O ^has_journal -m 0 -i 163840 -I 128'), ['-O', '^has_journal', '-m', '0', '-i', '163840', '-I', '128']);
  assert.deepEqual(parseMkfsOptions('-E lazy_journal_init'), ['-E', 'lazy_journal_init']);
  assert.deepEqual(parseMkfsOptions('-U 0b2e5d4e-8f0b-4e55-9c7e-1b2f3c4d5e6f -F -q'), ['-U', '0b2e5d4e-8f0b-4e55-9c7e-1b2f3c4d5e6f', '-q']);
  for (const bad of ['-d /etc', '-l /etc/badblocks', '-c', '-D', '-O', '-O -m', '-E root_owner=0:0;rm', '--help', 'x']) {
    assert.throws(() => parseMkfsOptions(bad), InvalidArgument, bad);
  }
});
