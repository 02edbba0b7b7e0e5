// The web UI's bundle: one entry, hashed file names under /assets/ (served immutable by
// kiln), no inline script (kiln's Content-Security-Policy allows none), no source maps in the
// embedded build.
import { defineConfig } from "vite";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
  },
});
