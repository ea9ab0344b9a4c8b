from xds_server.admin.openapi.document import main

main()
