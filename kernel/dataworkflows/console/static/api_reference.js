// Starts the vendored Swagger UI on the server's own OpenAPI document (no outside calls:
// the validator badge is off).
window.addEventListener("load", function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    tryItOutEnabled: true,
    validatorUrl: null,
  });
});
