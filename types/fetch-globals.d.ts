// connect-es's declarations name the fetch API's global HeadersInit, which the DOM lib
// declares; @types/node 20 declares Headers but not HeadersInit. The server has no DOM.
type HeadersInit = import("undici-types").HeadersInit;
