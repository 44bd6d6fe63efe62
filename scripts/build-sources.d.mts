/** Where the last build's hash of its sources is kept. */
export declare const STAMP: string;
/** The hash of the build's sources, under `root`. */
export declare function sourcesHash(root?: string): string;
/** Whether dist/ was built from the sources as they are now. */
export declare function distIsFresh(root?: string): boolean;
