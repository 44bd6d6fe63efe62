/** The run's PostgreSQL server (test/global-postgres.ts), and databases of their own for tests. */
import { inject } from "vitest";
import { createDatabase } from "./postgres-server.ts";

export { freePort, startPostgres, type TestPostgres } from "./postgres-server.ts";

/** A new, empty database on `adminUrl`'s server (the run's shared one by default): its URL. */
export function newDatabase(adminUrl = inject("postgresAdminUrl")): Promise<string> {
  return createDatabase(adminUrl);
}

declare module "vitest" {
  export interface ProvidedContext {
    postgresAdminUrl: string;
  }
}
