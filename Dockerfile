# syntax=docker/dockerfile:1
# vsockmesh: one image for every role (sidecar, host-relay, vm-manager,
# control-plane, ctl), the role given as the command:
#   docker build -t vsockmesh .
#   docker run --read-only -v vsockmesh-state:/var/lib/vsockmesh vsockmesh control-plane ...
# See README "Deploy". The base images are arguments so that a registry
# mirror (or a local stand-in) can be named without editing this file.
ARG NODE_IMAGE=node:20-bookworm
ARG NODE_SLIM_IMAGE=node:20-bookworm-slim

# ---- build: the native core (node-gyp: python3, make and g++ are in node:20-bookworm) and dist/
FROM ${NODE_IMAGE} AS build
WORKDIR /src
# The image carries Node's headers: node-gyp uses them instead of downloading them.
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
# --ignore-scripts: the package's install/prepare scripts build native and TypeScript code
# whose sources are not copied yet; both are built explicitly below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY binding.gyp tsconfig.json tsconfig.build.json ./
COPY proxy ./proxy
COPY xds ./xds
COPY proto ./proto
RUN npm run build:native \
 && npx tsc -p tsconfig.build.json \
 && node proxy/cmd/bundle-packages.mjs \
 && chmod 0755 dist/proxy/cmd/cli.js

# ---- production dependencies only (all pure JavaScript: nothing to build)
FROM ${NODE_SLIM_IMAGE} AS deps
WORKDIR /opt/vsockmesh
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# ---- runtime
FROM ${NODE_SLIM_IMAGE}
ENV NODE_ENV=production
WORKDIR /opt/vsockmesh
# iptables: the Kubernetes init container runs deploy/iptables/capture.sh from this image
# (as root with NET_ADMIN, in the pod's network namespace only).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid (Kubernetes runAsNonRoot checks a number); capture rules exclude it (capture.sh --uid 10001).
RUN groupadd --system --gid 10001 vsockmesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/vsockmesh --no-create-home --shell /usr/sbin/nologin vsockmesh \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/vsockmesh \
 && install -d -m 0755 /etc/vsockmesh
COPY --from=deps /opt/vsockmesh/node_modules ./node_modules
COPY --from=build /src/build/Release/vsockmesh_native.node ./build/Release/vsockmesh_native.node
COPY --from=build /src/dist/proxy ./dist/proxy
COPY --from=build /src/dist/xds ./dist/xds
COPY --from=build /src/dist/node_modules ./dist/node_modules
COPY package.json README.md ./
COPY proto ./proto
COPY deploy ./deploy
USER 10001:10001
# Everything the processes write: state files, the embedded CA, join tokens. Logs go to stdout.
# The root filesystem can be read-only (docker run --read-only, readOnlyRootFilesystem: true).
VOLUME ["/var/lib/vsockmesh"]
# sidecar: 15001 outbound (capture), 15006 inbound; control plane / VM manager: 15200 (gRPC).
# Admin endpoints listen on 127.0.0.1 inside the container (15000 sidecar, 15400 VM manager,
# 15401 control plane): the health check runs inside, and names the role's port in VSOCKMESH_ADMIN.
EXPOSE 15001 15006 15200
ENV VSOCKMESH_ADMIN=127.0.0.1:15000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "/opt/vsockmesh/deploy/container/ready.mjs"]
# The bin itself, so its shebang's node flags apply (a sidecar's 1 MiB young generation and the rest;
# the control plane and the VM manager re-execute with their own, see README "Running a sidecar").
ENTRYPOINT ["/opt/vsockmesh/dist/proxy/cmd/cli.js"]
CMD ["--help"]
