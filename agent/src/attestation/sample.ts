// The sample TEE: upstream's development evidence {"svn","report_data"},
// with report_data the runtime-data digest in standard base64, unpadded.
// Nothing is signed; the KBS checks report_data only.

import type { Attester } from './attester.ts';

export class SampleAttester implements Attester {
  readonly tee = 'sample' as const;
  readonly measurements = undefined;

  async evidence(reportData: Buffer): Promise<Record<string, unknown>> {
    return { svn: '1', report_data: reportData.toString('base64') };
  }

  async bindInitData(): Promise<'unsupported'> {
    return 'unsupported';
  }
}
