# The CPU image: the release archive (scripts/package.sh) on Debian, `jerex` on the PATH, the
# default model as a layer (/opt/jerex/share/jerex/models/default). From the repository:
#
#   scripts/package.sh
#   docker build -t jerex:0.1.0 .          # or: podman build / buildah bud
#   docker run --rm -v "$PWD/work:/work" jerex:0.1.0 run /work/job.toml
#
# Jobs, inputs and outputs are mounts (a job file's relative paths resolve beside it). Another
# model: mount its folder and set JEREX_MODEL, the job's model.dir or --model. The archive's
# libraries need the glibc and libstdc++ of the Debian release it was built on, or newer.
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS unpack
ARG ARCHIVE=dist/jerex-0.1.0-x86_64-linux.tar.gz
COPY ${ARCHIVE} /tmp/jerex.tar
RUN mkdir /opt/jerex && tar -xf /tmp/jerex.tar -C /opt/jerex --strip-components=1

# Unpacked in a stage of its own: the final image holds the files once, without the archive.
FROM ${BASE}
COPY --from=unpack /opt/jerex /opt/jerex
RUN ln -s /opt/jerex/bin/jerex /usr/local/bin/jerex && jerex doctor
WORKDIR /work
ENTRYPOINT ["jerex"]
CMD ["doctor"]
