module app {
    requires dev.herald;
}
