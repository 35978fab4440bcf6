// Vite builds the console into dist/, which fleetban-server embeds. During
// development, `npm run dev` serves the app with live reload and forwards
// the API to a running server (FLEETBAN_API, default http://127.0.0.1:8080).
import { defineConfig } from "vite";

const api = process.env.FLEETBAN_API ?? "http://127.0.0.1:8080";

export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    target: "es2022",
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 300,
  },
  server: {
    proxy: {
      // The live stream is long-lived: no proxy timeout.
      "/api": { target: api, changeOrigin: false, timeout: 0, proxyTimeout: 0 },
    },
  },
});
