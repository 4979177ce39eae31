# syntax=docker/dockerfile:1
#
# The autorollbackd image: a static binary on distroless, as user 65532.
#
#   docker build \
#     --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     -t ghcr.io/autorollbackd/autorollbackd:$(git describe --tags --always --dirty) .
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...
# (the builder cross-compiles; nothing runs under emulation).

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a change of the code reuses this layer.
COPY go.mod go.sum ./
COPY third_party/ third_party/
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG REVISION=unknown
ARG BRANCH=unknown
# TAGS=helm builds the -helm image, with the Helm SDK for
# policy.helm.mode rollback-release (docs/actions.md#helm).
ARG TAGS=
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -tags "${TAGS}" \
      -ldflags "-s -w \
        -X github.com/prometheus/common/version.Version=${VERSION} \
        -X github.com/prometheus/common/version.Revision=${REVISION} \
        -X github.com/prometheus/common/version.Branch=${BRANCH} \
        -X github.com/prometheus/common/version.BuildUser=docker" \
      -o /out/autorollbackd ./cmd/autorollbackd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/autorollbackd /autorollbackd
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/autorollbackd"]
CMD ["serve"]
