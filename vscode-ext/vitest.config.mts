import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

// `vscode` exists only inside the editor: the unit tests get a small stub instead.
export default defineConfig({
  resolve: {
    alias: { vscode: fileURLToPath(new URL("./test/vscode-stub.ts", import.meta.url)) },
  },
  test: { include: ["test/**/*.test.ts"], environment: "node" },
});
