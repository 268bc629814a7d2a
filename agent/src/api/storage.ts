// api.SecureMountService (CDH) and teeagent.SecureStorageService (our
// teardown, which upstream has no RPC for).

import type { SecureStorage } from '../storage/index.ts';
import { checkAbsolutePath, parseSecureMount, type SecureMountRequest } from '../storage/options.ts';
import { withLogFields, type Handler } from '../server/table.ts';

export function secureMountHandlers(storage: SecureStorage) {
  return {
    SecureMount: (async (request, ctx) => {
      const spec = parseSecureMount(request, storage.defaultIntegrity);
      const facts = await storage.mount(spec, ctx.signal);
      return withLogFields({}, { volume: facts });
    }) satisfies Handler<SecureMountRequest, object>,
  };
}

export function secureStorageHandlers(storage: SecureStorage) {
  return {
    SecureUnmount: (async (request) => {
      const mountPoint = checkAbsolutePath('mount_point', request.mount_point);
      return withLogFields({ unmounted: await storage.unmount(mountPoint) }, { mount_point: mountPoint });
    }) satisfies Handler<{ mount_point: string }, { unmounted: boolean }>,
  };
}
