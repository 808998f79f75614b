import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Fixtures run dist/ in children: never against code older than the sources.
    globalSetup: ['test/global-setup.ts'],
    // Native addons and worker threads do not mix well: one forked process per test file.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
