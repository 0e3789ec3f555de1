#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/op/op.hpp>

// y = -x (f32): a custom operation OpenVINO does not have, to test --cpu_extension
class DropinNegate : public ov::op::Op {
public:
    OPENVINO_OP("DropinNegate");
    DropinNegate() = default;
    explicit DropinNegate(const ov::Output<ov::Node>& x) : Op({x}) { constructor_validate_and_infer_types(); }
    void validate_and_infer_types() override {
        set_output_type(0, get_input_element_type(0), get_input_partial_shape(0));
    }
    std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& args) const override {
        return std::make_shared<DropinNegate>(args.at(0));
    }
    bool visit_attributes(ov::AttributeVisitor&) override { return true; }
    bool has_evaluate() const override { return true; }
    bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
        const auto& in = inputs[0];
        outputs[0].set_shape(in.get_shape());
        const float* x = in.data<float>();
        float* y = outputs[0].data<float>();
        for (size_t i = 0; i < in.get_size(); ++i) y[i] = -x[i];
        return true;
    }
};

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>({std::make_shared<ov::OpExtension<DropinNegate>>()}));
