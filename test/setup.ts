/** Runs around every test file: nothing a test made stays behind. */
import { afterAll } from "vitest";
import { removeTempDirs } from "./helpers/temp.ts";

afterAll(removeTempDirs);
