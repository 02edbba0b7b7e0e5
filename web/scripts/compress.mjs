// Writes a .gz beside every text file of the build (js, css, html, svg): kiln embeds both and
// sends the gzipped one to browsers that accept it.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (/\.(js|css|html|svg)$/.test(name)) {
      const bytes = readFileSync(path);
      const gz = gzipSync(bytes, { level: 9 });
      if (gz.length < bytes.length) writeFileSync(`${path}.gz`, gz);
    }
  }
}
walk(new URL("../dist", import.meta.url).pathname);
