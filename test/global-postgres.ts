/** One PostgreSQL server for the whole run; each test makes databases of its own on it. */
import type { TestProject } from "vitest/node";
import { startPostgres, type TestPostgres } from "./helpers/postgres-server.ts";

let postgres: TestPostgres | undefined;

export async function setup(project: TestProject): Promise<void> {
  postgres = await startPostgres();
  project.provide("postgresAdminUrl", postgres.adminUrl);
}

export async function teardown(): Promise<void> {
  await postgres?.remove();
}
