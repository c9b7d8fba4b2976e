# The Debian package, made by `cpack -G DEB` in a configured build tree:
# /usr/bin/scalekiq, the systemd unit, the README, and an example settings
# file that dpkg keeps as a conffile. Runtime Depends come from
# dpkg-shlibdeps (package dpkg-dev), so they follow what the binary links.

# The system files belong to the package only: a plain `cmake --install`
# to /usr/local must not write /etc or /lib/systemd, hence EXCLUDE_FROM_ALL
# and their own component, which CPack is told to install below.
install(FILES ${CMAKE_CURRENT_LIST_DIR}/systemd/scalekiq.service
        DESTINATION /lib/systemd/system COMPONENT system EXCLUDE_FROM_ALL)
# 0640: it is meant to hold the Heroku token.
install(FILES ${CMAKE_CURRENT_LIST_DIR}/systemd/scalekiq.env
        DESTINATION /etc/scalekiq COMPONENT system EXCLUDE_FROM_ALL
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ)
install(FILES ${PROJECT_SOURCE_DIR}/README.md
        DESTINATION share/doc/scalekiq COMPONENT system EXCLUDE_FROM_ALL)

set(CPACK_INSTALL_CMAKE_PROJECTS
    "${CMAKE_BINARY_DIR};scalekiq;Unspecified;/"
    "${CMAKE_BINARY_DIR};scalekiq;system;/")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME scalekiq)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "scalekiq maintainers <scalekiq@example.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "autoscale a Sidekiq app's Heroku worker formation on queue latency")
set(CPACK_PACKAGE_DESCRIPTION
    "scalekiq is a small agent that reads Sidekiq's queues in Redis, adds one
worker dyno per alert while jobs wait too long, and restores the original
count once the backlog is gone. Agents elect one leader through Redis and
keep the Redis keys of the sidekiq-amigo gem.")
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.invalid/scalekiq")
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_CURRENT_LIST_DIR}/debian/conffiles
    ${CMAKE_CURRENT_LIST_DIR}/debian/postinst
    ${CMAKE_CURRENT_LIST_DIR}/debian/prerm
    ${CMAKE_CURRENT_LIST_DIR}/debian/postrm)
# Gives the maintainer scripts 0755 and conffiles 0644, whatever the checkout did.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
