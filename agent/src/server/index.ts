// server/: transports only. One ServiceTable of handlers is served over gRPC
// (@grpc/grpc-js, unix and TCP) and ttrpc (our own framing, unix and TCP,
// vsock through a socat bridge). Nothing here knows about images or keys.
export { parseAddress, type ListenAddress } from './address.ts';
export { GrpcServer } from './grpc.ts';
export { loadProtos, serviceMethods } from './protos.ts';
export { ServiceTable, invoke, type CallContext, type Handler, type AnyHandler, type Handlers } from './table.ts';
export { TtrpcServer } from './ttrpc/server.ts';
export { TtrpcClient, TtrpcError } from './ttrpc/client.ts';
