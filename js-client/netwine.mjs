// netwine.js as an ES module: `import Netwine, {Socket} from 'netwine-client'`.
//
// netwine.js is one ES5 file for every kind of page. Evaluated as a module in a
// browser it sets globalThis.Netwine (it has no `module` there); under Node's
// CommonJS interop its module.exports arrives as the namespace's default.
import * as loaded from './netwine.js';

const Netwine = (loaded && loaded.default && loaded.default.Socket) ? loaded.default : globalThis.Netwine;

export default Netwine;
export const Socket = Netwine.Socket;
export const CONNECTING = Netwine.CONNECTING;
export const OPEN = Netwine.OPEN;
export const CLOSING = Netwine.CLOSING;
export const CLOSED = Netwine.CLOSED;
export const version = Netwine.version;
export const transports = Netwine.transports;
